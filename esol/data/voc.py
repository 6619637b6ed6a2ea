"""PASCAL VOC 2012 + SBD (``train_aug``) converted into the common layout of :mod:`esol.data.layout`.

Inputs are the extracted trees ``VOCdevkit/VOC2012`` (from ``VOCtrainval_11-May-2012.tar``) and,
optionally, ``benchmark_RELEASE/dataset`` (from SBD's ``benchmark.tgz``). Without SBD, ``train_aug``
is the 10,582-id list shipped with the package (``voc12_train_aug.txt``, IRN's
``voc12/train_aug.txt``): labels come from VOC's XML and every train_aug image is in VOC's
JPEGImages, so no scored step needs SBD. With SBD, the list is derived from it (and checked
against the shipped one on the full lists) and the train_aug images outside VOC train/val get
SBD's masks. Output:

* ``meta.json``: the 21 classes (background first); ``image_dir`` points at the extracted
  ``JPEGImages`` (relative to the dataset root), so 17k JPEGs are neither copied nor linked.
* ``SegmentationClass/<id>.png``: VOC's own mask when it has one (palette PNG, 255 = border),
  otherwise SBD's ``cls/<id>.mat`` (``GTcls.Segmentation``, no ignore border) as a palette PNG.
* splits: ``train_aug`` = (VOC train ∪ SBD train ∪ SBD val) − VOC val, sorted (10,582 on the real
  data, checked when the inputs are the full lists); ``train`` = VOC train (1,464, scores seeds and
  pseudo labels); ``val`` = VOC val (1,449, scores the segmentation net).
* ``cls_labels.json``: the ``<object><name>`` tags of ``Annotations/<id>.xml``, difficult and
  truncated objects included, as 1-based class ids. An object name outside the 20 classes is an
  error naming the file (IRN skips such names silently; the official annotations have none, so
  one means a modified or foreign tree, and skipping it would train on a wrong label).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from esol.data.layout import relative_dir
from esol.infra.io import InputError, read_label_png, write_json, write_label_png, write_text
from esol.infra.progress import tqdm

log = logging.getLogger("esol.voc")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# Sizes of the real lists; train_aug is only checked against 10,582 when all four match.
FULL_LIST_SIZES = {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857}
TRAIN_AUG_SIZE = 10582
MASK_DIR = "SegmentationClass"
SHIPPED_TRAIN_AUG = Path(__file__).with_name("voc12_train_aug.txt")


def shipped_train_aug() -> list[str]:
    """The 10,582 train_aug ids shipped with the package (IRN's ``voc12/train_aug.txt``), sorted."""
    return read_id_list(SHIPPED_TRAIN_AUG)


def read_id_list(path: Path) -> list[str]:
    """Image ids of a split list (one per line), in file order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: split list not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def image_labels(xml_path: Path, classes: tuple[str, ...] = VOC_CLASSES) -> list[int]:
    """Sorted 1-based class ids of every ``<object><name>`` in a VOC annotation file."""
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise InputError(f"{xml_path}: annotation not found")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{xml_path}: not valid XML ({exc})") from exc
    ids = set()
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes[1:]:
            raise InputError(f"{xml_path}: object name {name!r} is not a VOC class")
        ids.add(classes.index(name))
    return sorted(ids)


def read_sbd_mask(mat_path: Path, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """SBD's ``GTcls.Segmentation`` as (H, W) uint8, checked against the class count."""
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise InputError(f"{mat_path}: SBD mask not found")
    try:
        gt = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False)["GTcls"]
        label = np.asarray(gt.Segmentation)
    except (KeyError, AttributeError, ValueError, OSError) as exc:
        raise InputError(f"{mat_path}: cannot read GTcls.Segmentation ({type(exc).__name__}: {exc})") from exc
    if label.ndim != 2 or label.size == 0:
        raise InputError(f"{mat_path}: GTcls.Segmentation has shape {label.shape}, expected (H, W)")
    bad = np.unique(label[(label >= num_classes) & (label != 255)])
    if bad.size or label.min() < 0:
        raise InputError(f"{mat_path}: class id(s) {bad.tolist()} outside 0..{num_classes - 1}")
    return label.astype(np.uint8)


def train_aug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]) -> list[str]:
    """(VOC train ∪ SBD train ∪ SBD val) − VOC val, sorted; checked to be 10,582 on the full lists."""
    ids = sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))
    sizes = {"voc_train": len(voc_train), "voc_val": len(voc_val), "sbd_train": len(sbd_train), "sbd_val": len(sbd_val)}
    if sizes == FULL_LIST_SIZES:
        if len(ids) != TRAIN_AUG_SIZE:
            raise InputError(f"train_aug has {len(ids)} images, expected {TRAIN_AUG_SIZE} from the full VOC/SBD lists")
        shipped = shipped_train_aug()
        if ids != shipped:
            extra, absent = sorted(set(ids) - set(shipped)), sorted(set(shipped) - set(ids))
            raise InputError(
                f"train_aug derived from VOC + SBD differs from {SHIPPED_TRAIN_AUG}: "
                f"{len(extra)} id(s) not in it (e.g. {extra[:3]}), {len(absent)} missing (e.g. {absent[:3]})"
            )
    return ids


def train_aug_without_sbd(voc_train: list[str], voc_val: list[str], image_dir: Path) -> list[str]:
    """The shipped train_aug list, checked against this VOC tree: it holds every VOC train id and no
    val id (full lists), and each of its images is in ``image_dir``."""
    ids = shipped_train_aug()
    if len(voc_train) == FULL_LIST_SIZES["voc_train"] and len(voc_val) == FULL_LIST_SIZES["voc_val"]:
        if not set(voc_train) <= set(ids) or set(voc_val) & set(ids):
            raise InputError(f"{SHIPPED_TRAIN_AUG}: does not match this tree's VOC train/val lists")
    absent = [i for i in ids if not (image_dir / f"{i}.jpg").is_file()]
    if absent:
        raise InputError(
            f"{image_dir}: {len(absent)} of the {len(ids)} train_aug images of {SHIPPED_TRAIN_AUG.name} are missing "
            f"(e.g. {absent[:3]}): the VOC tree is incomplete. Use the full VOCtrainval_11-May-2012.tar, "
            "or provide SBD (benchmark_RELEASE/dataset, dataset.sbd: true) to derive train_aug from its lists."
        )
    return ids


def _check_size(mask: np.ndarray, image_path: Path, source: Path) -> None:
    with Image.open(image_path) as img:
        w, h = img.size
    if mask.shape != (h, w):
        raise InputError(f"{source}: mask is {mask.shape[1]}x{mask.shape[0]}, but {image_path} is {w}x{h}")


def prepare_voc(
    out_dir: Path, voc_root: Path, sbd_root: Path | None, *, name: str = "voc12", sources: list[dict] | None = None
) -> dict[str, int]:
    """Write VOC 2012 (+ SBD when ``sbd_root`` is given) into ``out_dir`` in the common layout;
    return the split sizes.

    ``voc_root`` is ``.../VOCdevkit/VOC2012``, ``sbd_root`` is ``.../benchmark_RELEASE/dataset``.
    Masks already present in ``out_dir`` (an interrupted earlier run) are kept.
    """
    out_dir, voc_root = Path(out_dir), Path(voc_root)
    sets = voc_root / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_id_list(sets / "train.txt"), read_id_list(sets / "val.txt")
    image_dir = voc_root / "JPEGImages"
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: VOC image directory not found")
    if sbd_root is not None:
        sbd_root = Path(sbd_root)
        sbd_train, sbd_val = read_id_list(sbd_root / "train.txt"), read_id_list(sbd_root / "val.txt")
        train_aug = train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
        log.info(
            "VOC train %d, val %d; SBD train %d, val %d -> train_aug %d",
            len(voc_train), len(voc_val), len(sbd_train), len(sbd_val), len(train_aug),
        )  # fmt: skip
    else:
        train_aug = train_aug_without_sbd(voc_train, voc_val, image_dir)
        log.info("VOC train %d, val %d; no SBD: train_aug %d from %s", len(voc_train), len(voc_val),
                 len(train_aug), SHIPPED_TRAIN_AUG.name)  # fmt: skip
    splits = {"train_aug": train_aug, "train": voc_train, "val": voc_val}
    all_ids = sorted(set().union(*splits.values()))
    labels = {i: image_labels(voc_root / "Annotations" / f"{i}.xml") for i in all_ids}

    mask_dir = out_dir / MASK_DIR
    need_voc_mask = set(voc_train) | set(voc_val)
    from_voc = from_sbd = 0
    for image_id in tqdm(all_ids, desc="VOC masks", mininterval=5):
        dest = mask_dir / f"{image_id}.png"
        if dest.is_file():
            continue
        voc_png = voc_root / "SegmentationClass" / f"{image_id}.png"
        if voc_png.is_file():
            mask, source = read_label_png(voc_png, len(VOC_CLASSES)), voc_png
            from_voc += 1
        elif image_id in need_voc_mask:
            raise InputError(f"{voc_png}: mask of a VOC train/val image not found")
        elif sbd_root is None:
            continue  # train_aug only: trains on its image-level label, scored nowhere
        else:
            source = sbd_root / "cls" / f"{image_id}.mat"
            mask = read_sbd_mask(source)
            from_sbd += 1
        _check_size(mask, image_dir / f"{image_id}.jpg", source)
        write_label_png(dest, mask)
    log.info("masks: %d from VOC SegmentationClass, %d from SBD (others kept or not needed)", from_voc, from_sbd)

    for split, ids in splits.items():
        write_text(out_dir / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    write_json(out_dir / "cls_labels.json", labels)
    meta = {
        "name": name,
        "classes": list(VOC_CLASSES),
        "image_dir": relative_dir(image_dir, out_dir),
        "mask_dir": MASK_DIR,
        "sbd": sbd_root is not None,
        "sources": sources or [],
    }
    write_json(out_dir / "meta.json", meta)
    return {split: len(ids) for split, ids in splits.items()}
