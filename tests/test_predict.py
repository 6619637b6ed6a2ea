"""``esol predict``: label maps and CAMs of trained models for new images, and its input checks."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from esol.cli import main
from esol.data.folder_example import ExampleSpec, build_example
from esol.inference.cams import load_cam
from esol.infra.io import voc_palette
from esol.method.model import ESOLNet
from esol.segmentation.network import build_seg_model
from esol.training import checkpoint

from .conftest import REPO

CLASSES = ["background", "gear", "spring"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A (randomly initialised) segmentation net and classifier of the smoke architecture (width 16),
    saved as train_seg and train_shrinkage save them (settings included), the net also as a file of
    an older version (no settings), and seven new images of mixed sizes and formats."""
    from esol.infra.config import params_from_dict

    from .conftest import smoke_params_dict

    root = tmp_path_factory.mktemp("predict")
    params = params_from_dict(smoke_params_dict())
    torch.manual_seed(0)
    seg = build_seg_model(params.train_seg, params.model, len(CLASSES))
    settings = {"model": dataclasses.asdict(params.model), "train_seg": dataclasses.asdict(params.train_seg)}
    meta = {"arch": "deeplabv3_small", "classes": CLASSES}
    checkpoint.save(root / "seg.pt", {"model": seg.state_dict(), "meta": {**meta, "settings": settings}})
    checkpoint.save(root / "seg_old.pt", {"model": seg.state_dict(), "meta": meta})
    cls = ESOLNet(params.model, len(CLASSES) - 1)
    meta = {"stage": "train_shrinkage", "classes": CLASSES, "clipped": True, "settings": {"model": settings["model"]}}
    checkpoint.save(root / "esol.pt", {"model": cls.state_dict(), "meta": meta})
    example = build_example(root / "example", ExampleSpec(count=7))
    return root, example / "images", example / "classes.txt"


@pytest.fixture
def params_file(tmp_path):
    import yaml

    from .conftest import smoke_params_dict

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict(), sort_keys=False))
    return path


def predict(params_file, *args: str) -> int:
    return main(["predict", "--params", str(params_file), "--device", "cpu", *args])


def test_predict_writes_a_palette_mask_per_image_at_its_size(models, tmp_path):
    root, images, classes = models
    out = tmp_path / "out"
    params_file = REPO / "params.yaml"  # width 32: the net's own settings (16) come from its file
    code = predict(params_file, "--model", str(root / "seg.pt"), "--images", str(images), "--out", str(out),
                   "--overlay", "--classes", str(classes), "--scales", "1.0", "0.75", "--batch-size", "2")  # fmt: skip
    assert code == 0
    sources = sorted(images.iterdir())
    assert sorted(p.stem for p in out.glob("*.png")) == [p.stem for p in sources]
    palette = voc_palette(256).reshape(-1).tolist()
    for source in sources:
        label = Image.open(out / f"{source.stem}.png")
        assert label.mode == "P" and label.size == Image.open(source).size
        assert label.getpalette()[: 3 * 256] == palette
        assert set(np.unique(np.asarray(label)).tolist()) <= {0, 1, 2}
        overlay = Image.open(out / "overlay" / f"{source.stem}.jpg")
        assert overlay.format == "JPEG" and overlay.size == label.size


def test_predict_cams_writes_make_cam_files_for_every_class(models, params_file, tmp_path):
    root, images, _ = models
    out = tmp_path / "cams"
    assert (
        predict(params_file, "--cams", "--model", str(root / "esol.pt"), "--images", str(images), "--out", str(out))
        == 0
    )
    for source in sorted(images.iterdir()):
        keys, cams = load_cam(out / f"{source.stem}.npz")
        width, height = Image.open(source).size
        assert keys.tolist() == [1, 2] and cams.shape == (2, height, width)
        with np.load(out / f"{source.stem}.npz") as data:
            assert data["scores"].shape == (2,) and ((0 <= data["scores"]) & (data["scores"] <= 1)).all()


def test_a_file_that_is_no_image_stops_predict_before_any_output(models, params_file, tmp_path, capsys):
    root, images, _ = models
    mixed = tmp_path / "mixed"
    shutil.copytree(images, mixed)
    (mixed / "notes.txt").write_text("not an image")
    (mixed / "broken.png").write_bytes(b"\x89PNG but not really")
    out = tmp_path / "out"
    assert predict(params_file, "--model", str(root / "seg.pt"), "--images", str(mixed), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "broken.png: unreadable image" in err and "and 1 more problem(s): 1 not an image" in err
    assert not out.exists()


def test_an_older_model_file_takes_its_architecture_from_params(models, params_file, tmp_path, capsys):
    root, images, _ = models
    out = tmp_path / "out"
    assert predict(params_file, "--model", str(root / "seg_old.pt"), "--images", str(images), "--out", str(out)) == 0
    wrong = predict(
        REPO / "params.yaml", "--model", str(root / "seg_old.pt"), "--images", str(images), "--out", str(out)
    )
    assert wrong == 2 and "checkpoint is from a different architecture" in capsys.readouterr().err


def test_a_model_of_other_classes_is_refused(models, params_file, tmp_path, capsys):
    root, images, _ = models
    other = tmp_path / "classes.txt"
    other.write_text("cat\ndog\n")
    out = tmp_path / "out"
    code = predict(params_file, "--model", str(root / "seg.pt"), "--images", str(images), "--out", str(out),
                   "--classes", str(other))  # fmt: skip
    assert code == 2
    assert "trained on classes gear, spring, but" in capsys.readouterr().err and not out.exists()


def test_a_classifier_is_no_segmentation_model_and_the_reverse(models, params_file, tmp_path, capsys):
    root, images, _ = models
    out = tmp_path / "out"
    assert predict(params_file, "--model", str(root / "esol.pt"), "--images", str(images), "--out", str(out)) == 2
    assert "a classifier model (stage train_shrinkage); predict takes results/models/seg.pt" in capsys.readouterr().err
    assert (
        predict(params_file, "--cams", "--model", str(root / "seg.pt"), "--images", str(images), "--out", str(out)) == 2
    )
    assert "a segmentation model (deeplabv3_small); --cams takes a classifier" in capsys.readouterr().err
    assert not out.exists()
