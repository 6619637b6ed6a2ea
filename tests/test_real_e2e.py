"""The voc12 and coco14 recipes end to end under Snakemake, as an offline user runs them: data
pre-staged in ESOL_DATA_DIR (small trees in the real layouts, VOC-sized real pixels), a real
torchvision ResNet-50 from ``model.weights_file`` (``pretrained: true``), data-loader workers on,
every network connection refused. The recipe is shrunk only in crop, batch, epochs and the scales
of CAM inference and segmentation evaluation, by a ``--configfile`` overlay (minutes on 2 cores).
The DAG is the recipe's whole: both variants' CRF and IRN refinement (ResNet-50 IRN) and
segmentation nets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from .pipeline_project import make_project, run
from .real_trees import NO_NETWORK_SITECUSTOMIZE, build_coco_tree, build_voc_tree, write_resnet50_weights

pytestmark = pytest.mark.slow

CROP, BATCH = 128, 4


def shrink_overlay(dataset: str, weights_file: Path) -> dict:
    """The recipe of ``dataset`` shrunk in crop, batch, epochs and scales; workers 2; the weights file."""
    stage = {"epochs": 1, "batch_size": BATCH, "crop_size": CROP}
    return {
        "dataset": {"name": dataset},
        "model": {"weights_file": str(weights_file)},
        "recipes": {
            dataset: {
                "runtime": {"num_workers": 2, "device": "cpu"},
                "train_cam": stage,
                "train_expansion": stage,
                "train_shrinkage": stage,
                "make_cam": {"scales": [0.5]},
                "train_irn": stage,
                "train_seg": stage,
                "eval_seg": {"scales": [1.0]},
            }
        },
    }


def run_offline(tmp_path: Path, dataset: str, build_tree) -> Path:
    staged = tmp_path / "staged"
    build_tree(staged)
    weights = write_resnet50_weights(tmp_path / "resnet50_bn_measured.pth")
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())  # the recipe as shipped
    project = make_project(tmp_path / "esol", params=params)
    overlay = tmp_path / "offline.yaml"
    overlay.write_text(yaml.safe_dump(shrink_overlay(dataset, weights)))
    nonet = tmp_path / "nonet"
    nonet.mkdir()
    (nonet / "sitecustomize.py").write_text(NO_NETWORK_SITECUSTOMIZE)
    env = {
        "ESOL_DATA_DIR": str(staged),
        "PYTHONPATH": str(nonet),
        "TORCH_HOME": str(tmp_path / "empty_torch_home"),  # no cached ImageNet weights to fall back on
        "OMP_NUM_THREADS": "1",
    }
    run(project, "snakemake", "--cores", "2", "--configfile", str(overlay), timeout=2700, extra_env=env)
    return project


def check_results(project: Path, dataset: str, num_classes: int) -> None:
    metrics = project / "results" / "metrics"
    data = json.loads((metrics / "data.json").read_text())
    assert data["dataset"] == dataset
    sources = json.loads((project / "data" / "sources.json").read_text())
    assert all(root.startswith(str(project.parent / "staged")) for root in sources["roots"].values())
    downloads = project / "data" / "downloads"  # COCO keeps its image links there; no archive was fetched
    assert not downloads.exists() or not [
        p for p in downloads.rglob("*") if p.suffix in (".tar", ".tgz", ".zip", ".part")
    ]
    for stage in ("cam", "expansion", "esol"):
        trained = json.loads((metrics / "train" / f"{stage}.json").read_text())
        assert math.isfinite(trained["loss"]), trained
    for variant in ("cam", "esol"):
        irn = json.loads((metrics / "train" / f"irn_{variant}.json").read_text())
        assert all(math.isfinite(v) for v in irn.values() if isinstance(v, float)), irn
        masks = json.loads((metrics / "pseudo_labels" / f"{variant}_irn.json").read_text())
        assert 0 <= masks["miou"] <= 100 and len(masks["per_class"]) == num_classes, masks["miou"]
    for name in ("seeds", "pseudo_labels", "segmentation"):
        m = json.loads((metrics / f"{name}.json").read_text())
        assert 0 <= m["miou"] <= 100 and len(m["per_class"]) == num_classes, (name, m["miou"])
    log = (project / "logs" / "train_cam.log").read_text()
    assert "network blocked" not in log and "Downloading" not in log


def test_voc12_recipe_offline_end_to_end(tmp_path):
    project = run_offline(tmp_path, "voc12", build_voc_tree)
    check_results(project, "voc12", 21)
    splits = json.loads((project / "results" / "metrics" / "data.json").read_text())["splits"]
    assert splits == {"train_aug": 6, "train": 4, "val": 2}  # SBD found in ESOL_DATA_DIR: train_aug derived


def test_coco14_recipe_offline_end_to_end(tmp_path):
    project = run_offline(tmp_path, "coco14", build_coco_tree)
    check_results(project, "coco14", 81)
    splits = json.loads((project / "results" / "metrics" / "data.json").read_text())["splits"]
    assert splits == {"train_aug": 6, "train": 6, "val": 2}
