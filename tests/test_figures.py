"""The report's figures step (make_figures) on made-up inputs."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from esol.inference.cams import save_cam
from esol.infra.io import voc_palette, write_json, write_label_png

from .conftest import REPO


def _seed_metrics(variant: str, classes: list[str], shift: float) -> dict:
    curve = [
        {"threshold": t, "miou": 20 + shift + 30 * t, "precision": 10 + 60 * t, "recall": 80 - 50 * t}
        for t in np.round(np.arange(0, 1, 0.05), 2).tolist()
    ]
    return {
        "variant": variant,
        "miou": 30.0 + shift,
        "precision": 40.0,
        "recall": 50.0,
        "per_class": {c: 10.0 * i + shift for i, c in enumerate(classes)},
        "threshold": 0.25,
        "best_threshold": 0.9,
        "best": {"miou": 47.0 + shift, "precision": 60.0, "recall": 40.0},
        "curve": curve,
    }


@pytest.fixture
def figure_inputs(smoke_dataset, smoke_params, tmp_path):
    """Every input of make_figures, made up: random CAMs, ground truth as pseudo labels, an
    untrained segmentation net, hand-written metrics and training curves."""
    from esol.segmentation.network import build_seg_model
    from esol.training import checkpoint

    ds = smoke_dataset
    ids = ds.ids("train")[:3]
    rng = np.random.default_rng(0)
    cams, labels, seeds, pseudo = [], [], [], []
    for shift, variant in enumerate(("esol", "cam", "expansion", "shrinkage")):  # order must not matter
        cam_dir = tmp_path / "cams" / variant
        for image_id in ids:
            keys = np.asarray(ds.labels(image_id))
            h, w = ds.mask(image_id).shape
            save_cam(cam_dir / f"{image_id}.npz", keys, rng.integers(0, 256, (len(keys), h, w), dtype=np.uint8))
        cams.append(cam_dir)
        seeds.append(tmp_path / "metrics" / f"seeds_{variant}.json")
        write_json(seeds[-1], _seed_metrics(variant, ds.classes, shift))
    for variant in ("cam", "esol"):
        label_dir = tmp_path / "pseudo_labels" / variant
        for image_id in ids:
            mask = ds.mask(image_id).copy()
            mask[:4] = 255
            write_label_png(label_dir / f"{image_id}.png", mask)
        labels.append(label_dir)
        pseudo.append(tmp_path / "metrics" / f"pl_{variant}.json")
        write_json(pseudo[-1], {**_seed_metrics(variant, ds.classes, 1), "uncertain_percent": 12.0})
    segmentation = tmp_path / "metrics" / "segmentation.json"
    write_json(segmentation, {**_seed_metrics("seg", ds.classes, 2), "all_background_miou": 20.0})
    ablation = tmp_path / "metrics" / "ablation.csv"
    ablation.write_text("variant,seed_miou\ncam,30.0\nesol,33.0\n")
    net = build_seg_model(smoke_params.train_seg, smoke_params.model, ds.num_classes)
    model = tmp_path / "seg.pt"
    checkpoint.save(model, {"model": net.state_dict()})
    live = []
    for stage, metrics in (("train_cam", ("loss", "cls_loss", "lr")), ("train_seg", ("loss", "lr"))):
        for name in metrics:
            tsv = tmp_path / "live" / stage / "plots" / "metrics" / "train" / f"{name}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text("step\t" + name + "\n" + "".join(f"{i}\t{1 / (i + 1)}\n" for i in range(4)))
        live.append(tmp_path / "live" / stage)
    return {
        "data": ds.root,
        "cams": cams,
        "pseudo_labels": labels,
        "seg_model": model,
        "seeds": seeds,
        "pseudo_label_metrics": pseudo,
        "segmentation": segmentation,
        "ablation": ablation,
        "live": live,
        "ids": ids,
    }


def test_make_figures_draws_every_figure_and_table(figure_inputs, smoke_params, tmp_path):
    from esol.steps import make_figures

    ids = figure_inputs.pop("ids")
    out = tmp_path / "figures"
    outputs = {
        "samples": out / "samples",
        "per_class": out / "per_class_iou.png",
        "threshold_curve": out / "seed_threshold.png",
        "training_curves": out / "training_curves.png",
        "tables": out / "metrics.html",
    }
    result = make_figures.run(smoke_params, **figure_inputs, **outputs, count=3)
    assert result["samples"] == ids
    assert sorted(p.stem for p in outputs["samples"].glob("*.png")) == sorted(ids)
    for path in [*outputs["samples"].glob("*.png"), *(outputs[k] for k in outputs if k not in ("samples", "tables"))]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 150, path
    # a grid shows nine panels side by side: wider than tall
    with Image.open(next(outputs["samples"].glob("*.png"))) as grid:
        assert grid.width > 4 * grid.height
    html = outputs["tables"].read_text()
    for heading in ("Seeds", "CRF pseudo labels", "Segmentation", "Per-class IoU", "Ablation"):
        assert heading in html
    # variants in pipeline order, whatever the order of the inputs
    assert html.index(">cam<") < html.index(">expansion<") < html.index(">shrinkage<") < html.index(">esol<")


def test_labels_are_drawn_in_the_voc_palette():
    from esol.reporting.plots import colorize

    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    rgb = colorize(label)
    palette = voc_palette()
    assert rgb.shape == (2, 2, 3)
    assert (rgb[0, 1] == palette[1]).all() and (rgb[1, 0] == palette[2]).all() and (rgb[1, 1] == palette[255]).all()


def test_make_figures_rule_is_in_the_default_target():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "make_figures" in stages["stages"]
    plots = {next(iter(p)) for p in stages["plots"]}
    assert {"seeds_miou", "training_loss"} <= plots
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "results/figures/samples" in text
