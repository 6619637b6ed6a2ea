"""A folder of your own images (esol.data.folder): validation errors, the prepared layout, the split."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from esol.data.folder import prepare_folder, read_folder
from esol.data.folder_example import ExampleSpec, build_example
from esol.data.layout import Dataset
from esol.infra.config import FolderConfig, deep_merge, params_from_dict
from esol.infra.io import InputError, write_label_png
from esol.steps import download_data, prepare_data

from .conftest import smoke_params_dict


@pytest.fixture(scope="module")
def example_template(tmp_path_factory):
    return build_example(tmp_path_factory.mktemp("folder") / "example", ExampleSpec(count=12))


@pytest.fixture
def folder(example_template, tmp_path):
    """A fresh copy of a 12-image example folder (4 with masks) to break."""
    dest = tmp_path / "mine"
    shutil.copytree(example_template, dest)
    return dest


def cfg(root, val_fraction=0.25) -> FolderConfig:
    return FolderConfig(root=str(root), val_fraction=val_fraction, unscored_train_sample=5)


def folder_error(folder) -> str:
    """The message of the one error that validating ``folder`` raises."""
    with pytest.raises(InputError) as error:
        read_folder(cfg(folder), seed=0)
    return str(error.value)


def rewrite_labels(folder, edit) -> None:
    path = folder / "labels.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_prepare_data_points_at_the_folder_and_scores_the_masked_images(folder, tmp_path):
    raw = deep_merge(smoke_params_dict(), {"dataset": {"name": "folder"}, "folder": {"root": str(folder)}})
    out = tmp_path / "dataset"
    params = params_from_dict(raw)
    download_data.run(params, out=tmp_path / "sources.json")  # a folder needs nothing fetched
    summary = prepare_data.run(params, sources=tmp_path / "sources.json", out_dir=out, metrics=tmp_path / "data.json")
    dataset = Dataset(out)
    assert dataset.classes == ["background", "gear", "spring"]
    sizes = summary["splits"]
    assert sizes["train_aug"] + sizes["val"] == 12
    assert not list(out.rglob("*.jpg")) and not list(out.rglob("*.png"))  # nothing copied, nothing linked
    masked = {p.stem for p in (folder / "masks").glob("*.png")}
    assert set(dataset.ids("train")) == masked & set(dataset.ids("train_aug"))
    assert set(dataset.scored_ids("val")) == masked & set(dataset.ids("val"))
    assert dataset.scored_ids("val"), "the stratified split gives val masked images too"
    grey = "img_0004"  # saved greyscale by the example (every fifth image)
    assert Image.open(dataset.image_path(grey)).mode == "L"
    assert dataset.image(grey).shape[2] == 3
    assert dataset.image_path("img_0002").suffix == ".png"
    first = dataset.ids("train")[0]
    assert dataset.mask(first).shape == dataset.image(first).shape[:2]


def test_the_example_overlay_selects_the_folder_dataset():
    import yaml

    from .conftest import REPO

    overlay = yaml.safe_load((REPO / "config" / "folder-example.yaml").read_text())
    params = params_from_dict(deep_merge(smoke_params_dict(), overlay))
    assert params.dataset.name == "folder" and params.folder.root == "data/folder"


def test_without_masks_train_is_an_unscored_sample(folder, tmp_path):
    shutil.rmtree(folder / "masks")
    prepare_folder(tmp_path / "out", cfg(folder), seed=0)
    dataset = Dataset(tmp_path / "out")
    assert len(dataset.ids("train")) == 5 and set(dataset.ids("train")) <= set(dataset.ids("train_aug"))
    assert dataset.scored_ids("train") == [] and dataset.scored_ids("val") == []
    dataset.check()


def test_the_seeded_split_is_stratified_and_reproducible(folder):
    a, b = read_folder(cfg(folder), seed=3), read_folder(cfg(folder), seed=3)
    assert (a.train, a.val) == (b.train, b.val)
    assert len(a.val) == 3 and not set(a.train) & set(a.val)
    assert 0 < len(a.masked & set(a.val)) < len(a.masked)
    assert read_folder(cfg(folder), seed=4).val != a.val


def test_split_files_are_used_and_checked(folder):
    (folder / "splits").mkdir()
    (folder / "splits" / "train.txt").write_text("img_0000\nimg_0001.jpg\nimg_0003\n")
    (folder / "splits" / "val.txt").write_text("img_0002\n")
    data = read_folder(cfg(folder), seed=0)
    assert (data.train, data.val) == (["img_0000", "img_0001", "img_0003"], ["img_0002"])
    (folder / "splits" / "val.txt").write_text("img_0002\nimg_0999\nimg_0003\n")
    message = folder_error(folder)
    assert "val.txt, line 2: 'img_0999' is no image of labels.csv" in message
    assert "and 1 more problem(s): 1 image in both splits" in message


def test_unknown_class_names_name_the_row_and_count_the_others(folder):
    rewrite_labels(folder, lambda lines: [lines[0], "img_0000.jpg,gear|sprocket", "img_0001.jpg,cog", *lines[3:]])
    message = folder_error(folder)
    assert "labels.csv, line 2: unknown class name(s) 'sprocket' for img_0000.jpg" in message
    assert "(classes.txt lists gear, spring)" in message
    assert "(and 1 more problem(s): 1 unknown class name)" in message


def test_an_image_listed_but_missing_is_an_error(folder):
    (folder / "images" / "img_0003.jpg").unlink()
    with pytest.raises(InputError, match=r"labels.csv, line 5: image img_0003.jpg is listed but not in .*images"):
        read_folder(cfg(folder), seed=0)


def test_an_image_on_disk_but_not_listed_is_a_warning(folder, tmp_path, caplog):
    shutil.copy(folder / "images" / "img_0000.jpg", folder / "images" / "extra.jpg")
    with caplog.at_level(logging.WARNING, logger="esol.folder"):
        data = read_folder(cfg(folder), seed=0)
    assert len(data.images) == 12
    assert "1 image(s) on disk are not in labels.csv and are not used, e.g. extra.jpg" in caplog.text


def test_an_unreadable_image_is_named(folder):
    (folder / "images" / "img_0005.png").write_bytes(b"not a png at all")
    (folder / "images" / "img_0006.jpg").write_bytes(b"\x00" * 64)
    message = folder_error(folder)
    assert "img_0005.png: unreadable image, listed on labels.csv line 7" in message
    assert "and 1 more problem(s): 1 unreadable image" in message


def test_a_gif_named_jpg_is_refused(folder):
    Image.new("P", (8, 8)).save(folder / "images" / "img_0007.jpg", format="GIF")
    with pytest.raises(InputError, match=r"img_0007.jpg: a GIF file; JPEG or PNG expected"):
        read_folder(cfg(folder), seed=0)


def test_a_duplicate_row_is_an_error(folder):
    rewrite_labels(folder, lambda lines: [*lines, "img_0001.jpg,gear"])
    with pytest.raises(InputError, match=r"labels.csv, line 14: duplicate row: img_0001.jpg is already on line 3"):
        read_folder(cfg(folder), seed=0)


def test_two_images_of_one_stem_are_an_error(folder):
    Image.open(folder / "images" / "img_0000.jpg").save(folder / "images" / "img_0000.png")
    rewrite_labels(folder, lambda lines: [*lines, "img_0000.png,gear"])
    with pytest.raises(InputError, match=r"line 14: img_0000.png: stem 'img_0000' also names line 2's image"):
        read_folder(cfg(folder), seed=0)


def test_a_mask_of_another_size_is_an_error(folder):
    write_label_png(folder / "masks" / "img_0001.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(InputError, match=r"masks/img_0001.png: mask is 12x10, but its image img_0001.jpg is 80x64"):
        read_folder(cfg(folder), seed=0)


def test_mask_values_outside_the_classes_are_an_error(folder):
    mask = np.asarray(Image.open(folder / "masks" / "img_0000.png")).copy()
    mask[:2, :2] = 3  # two classes: 0..2 and 255 are allowed
    write_label_png(folder / "masks" / "img_0000.png", mask)
    with pytest.raises(InputError, match=r"masks/img_0000.png: mask values \[3\] outside 0..2 \(255 = ignore\)"):
        read_folder(cfg(folder), seed=0)


def test_fewer_than_two_classes_is_an_error(folder):
    (folder / "classes.txt").write_text("gear\n\n")
    with pytest.raises(InputError, match=r"classes.txt: 1 class\(es\) listed; at least two are needed"):
        read_folder(cfg(folder), seed=0)


def test_a_wrong_header_and_a_background_class_are_named(folder):
    rewrite_labels(folder, lambda lines: ["file,classes", *lines[1:]])
    with pytest.raises(InputError, match=r"labels.csv, line 1: header must be 'image,labels'"):
        read_folder(cfg(folder), seed=0)
    (folder / "classes.txt").write_text("gear\nbackground\nspring\n")
    with pytest.raises(InputError, match=r"classes.txt, line 2: background is class 0 and is not listed"):
        read_folder(cfg(folder), seed=0)


def test_esol_example_folder_writes_ten_valid_images(tmp_path):
    from esol.cli import main

    dest = tmp_path / "example"
    assert main(["example-folder", str(dest)]) == 0
    data = read_folder(cfg(dest, val_fraction=0.2), seed=0)
    assert len(data.images) == 10 and len(data.masked) == 3 and data.classes == ["background", "gear", "spring"]
    assert main(["example-folder", str(dest)]) == 2  # not empty: refused, left as it was
    assert len(list((dest / "images").iterdir())) == 10
