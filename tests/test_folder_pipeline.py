"""The whole DAG under Snakemake on a folder of your own images: with masks on a third, and without."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from esol.data.folder_example import ExampleSpec, build_example
from esol.infra.config import deep_merge

from .conftest import REPO
from .pipeline_project import make_project, run

pytestmark = pytest.mark.slow

IMAGES = 36
HEADLINE = ("seeds", "pseudo_labels", "segmentation")
FEWER_EPOCHS = {"train_cam": {"epochs": 4}, "train_seg": {"epochs": 2}, "make_cam": {"scales": [1.0]}}


def folder_project(root, masked_fraction: float):
    """A project whose params.yaml names a 36-image folder dataset, run on the smoke settings."""
    params = deep_merge(
        yaml.safe_load((REPO / "params.yaml").read_text()),
        {"dataset": {"name": "folder"}, "folder": {"root": "own_images", "val_fraction": 0.25}},
    )
    project = make_project(root, params)
    build_example(project / "own_images", ExampleSpec(count=IMAGES, masked_fraction=masked_fraction))
    # Smaller still than the smoke settings: these runs check that the DAG runs, not what it learns.
    (project / "fewer_epochs.yaml").write_text(yaml.safe_dump(FEWER_EPOCHS))
    run(project, "snakemake", "--cores", "2", "--configfile", "config/smoke.yaml", "fewer_epochs.yaml")
    return project


def metrics(project, name):
    return json.loads((project / "results" / "metrics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def masked_project(tmp_path_factory):
    return folder_project(tmp_path_factory.mktemp("folder_masked") / "esol", 1 / 3)


@pytest.fixture(scope="module")
def unmasked_project(tmp_path_factory):
    return folder_project(tmp_path_factory.mktemp("folder_unmasked") / "esol", 0.0)


def val_ids(project):
    return (project / "data/dataset/ImageSets/Segmentation/val.txt").read_text().split()


def test_a_folder_with_masks_is_scored_on_its_masked_images(masked_project):
    meta = json.loads((masked_project / "data/dataset/meta.json").read_text())
    assert meta["name"] == "folder" and meta["scored"]["train"] > 0 and meta["scored"]["val"] > 0
    for name in HEADLINE:
        m = metrics(masked_project, name)
        assert "status" not in m and 0 <= m["miou"] <= 100 and set(m["per_class"]) == {"background", "gear", "spring"}
    table = (masked_project / "results/metrics/ablation.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in table[1:]] == ["cam", "expansion", "shrinkage", "esol"]
    ids = val_ids(masked_project)
    assert len(ids) == IMAGES // 4
    for image_id in ids:  # every val image predicted at its own size, scored or not
        prediction = Image.open(masked_project / "results/predictions/val_esol" / f"{image_id}.png")
        image_file = next((masked_project / "own_images/images").glob(f"{image_id}.*"))
        assert prediction.size == Image.open(image_file).size and prediction.mode == "P"
    samples = sorted((masked_project / "results/figures/samples").glob("*.png"))
    assert len(samples) == min(6, meta["scored"]["train"])


def test_esol_predict_applies_the_trained_models_to_new_images(masked_project, tmp_path):
    new = build_example(tmp_path / "new", ExampleSpec(count=4, seed=7)) / "images"
    # params.yaml, not the smoke overlay the models were trained with: the nets' settings are in their files
    esol = (sys.executable, "-m", "esol", "predict", "--device", "cpu", "--images", str(new))
    run(masked_project, *esol, "--model", "results/models/seg.pt", "--out", str(tmp_path / "labels"), "--overlay")
    run(masked_project, *esol, "--cams", "--model", "results/models/esol.pt", "--out", str(tmp_path / "cams"))
    for image in sorted(new.iterdir()):
        label = Image.open(tmp_path / "labels" / f"{image.stem}.png")
        assert label.size == Image.open(image).size and label.mode == "P"
        assert (tmp_path / "labels" / "overlay" / f"{image.stem}.jpg").is_file()
        assert (tmp_path / "cams" / f"{image.stem}.npz").is_file()


def test_a_folder_without_masks_runs_and_says_not_scored(unmasked_project):
    for name in HEADLINE:
        m = metrics(unmasked_project, name)
        assert m["scored"] is False and m["status"] == "not scored", name
    for variant in ("cam", "expansion", "shrinkage", "esol"):
        assert metrics(unmasked_project, f"seeds/{variant}")["status"] == "not scored"
    table = (unmasked_project / "results/metrics/ablation.csv").read_text().splitlines()
    assert table[0] == "variant,status" and table[1:] == [
        f"{v},not scored" for v in ("cam", "expansion", "shrinkage", "esol")
    ]
    assert "not scored" in (unmasked_project / "results/figures/metrics.html").read_text()
    # The report still shows CAMs and pseudo labels: one grid per sampled train image.
    samples = sorted((unmasked_project / "results/figures/samples").glob("*.png"))
    assert len(samples) == 6
    train_aug = (unmasked_project / "data/dataset/ImageSets/Segmentation/train_aug.txt").read_text().split()
    labels = sorted(p.stem for p in (unmasked_project / "results/pseudo_labels/esol").glob("*.png"))
    assert labels == sorted(train_aug)
    assert np.asarray(Image.open(samples[0])).std() > 0


def test_editing_the_folder_reruns_prepare_data(unmasked_project, tmp_path):
    project = tmp_path / "copy"
    shutil.copytree(unmasked_project, project, symlinks=True)
    labels = project / "own_images" / "labels.csv"
    labels.write_text(labels.read_text())  # touched: newer than data/dataset
    dry = run(project, "snakemake", "-n", "--configfile", "config/smoke.yaml", "fewer_epochs.yaml")
    assert "prepare_data" in dry.stdout
