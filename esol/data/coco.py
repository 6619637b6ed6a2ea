"""MS COCO 2014 instances converted into 81-class semantic masks in the common layout.

Inputs: the extracted ``train2014/`` and ``val2014/`` image directories and
``annotations/instances_{train,val}2014.json``. Output (see :mod:`esol.data.layout`):

* classes: ``background`` then the 80 COCO categories in ascending category id; the sparse ids
  (1..90) map to 1..80 in that order.
* ``SegmentationClass/<id>.png`` (id = file name stem, e.g. ``COCO_train2014_000000000009``):
  0 = background. **Overlap rule**: non-crowd instances are painted in *descending area* (the
  annotation's ``area``; ties by annotation id), so where objects overlap the smaller one stays on
  top and stays visible. **Crowd** regions (``iscrowd: 1``) become 255 (ignore) where no non-crowd
  instance was painted. Polygons are rasterised with ``PIL.ImageDraw``, RLE masks (uncompressed
  count lists and COCO's compressed strings) are decoded here; pycocotools is not needed. Polygon
  edges may differ from pycocotools' rasteriser by about one pixel.
* ``cls_labels.json``: the categories of all of an image's annotations (crowd included: a crowd of
  people is people in the image).
* splits: images without any annotation are dropped (82,081 train / 40,137 val expected on the
  full data; a different count is logged as a warning). ``train_aug`` and ``train`` are both the
  annotated train2014 images (classifier training, seed and pseudo-label scoring), ``val`` the
  annotated val2014 images.
* images: the two image directories are joined through one flat directory of symlinks
  (``links_dir``), outside the dataset root; ``meta.json``'s ``image_dir`` points at it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from esol.data.layout import relative_dir
from esol.infra.io import IGNORE_LABEL, InputError, read_json, write_json, write_label_png, write_text
from esol.infra.progress import tqdm

log = logging.getLogger("esol.coco")

MASK_DIR = "SegmentationClass"
# Annotated images in the full COCO 2014 lists (WSSS convention), keyed by the full image count.
FULL_ANNOTATED = {82783: 82081, 40504: 40137}


def rle_counts_from_string(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (maskApi.c ``rleFrString``) into run lengths.

    Each count is a little-endian sequence of 5-bit chunks stored as ``chr(48 + chunk)``, bit 0x20
    marking "more chunks follow" and bit 0x10 of the last chunk the sign; counts after the third
    are stored as the difference to the count two places before.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(counts: list[int], h: int, w: int) -> np.ndarray:
    """(H, W) bool mask from column-major run lengths (zeros first), as COCO stores them."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    if (counts_arr < 0).any() or counts_arr.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts_arr.sum())}, expected {h}*{w}={h * w}")
    values = np.zeros(len(counts_arr), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts_arr).reshape(w, h).T


def polygon_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """(H, W) bool union of COCO polygons ``[[x1, y1, x2, y2, ...], ...]``."""
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def annotation_mask(segmentation: list | dict, h: int, w: int) -> np.ndarray:
    """Rasterise one annotation's ``segmentation`` (polygons, RLE or compressed RLE)."""
    if isinstance(segmentation, list):
        return polygon_mask(segmentation, h, w)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = list(segmentation.get("size", (h, w)))
        if size != [h, w]:
            raise ValueError(f"RLE size {size} differs from the image size [{h}, {w}]")
        counts = segmentation["counts"]
        if isinstance(counts, str | bytes):
            counts = rle_counts_from_string(counts)
        return rle_decode(counts, h, w)
    raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")


def semantic_mask(annotations: list[dict], h: int, w: int, cat_to_label: dict[int, int]) -> np.ndarray:
    """Paint one image's annotations with the overlap rule of the module docstring."""
    label = np.zeros((h, w), dtype=np.uint8)
    painted = np.zeros((h, w), dtype=bool)
    instances, crowds = [], []
    for ann in annotations:
        try:
            mask = annotation_mask(ann["segmentation"], h, w)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InputError(f"annotation {ann.get('id')}: cannot rasterise its segmentation ({exc})") from exc
        if ann.get("iscrowd", 0):
            crowds.append(mask)
        else:
            area = float(ann["area"]) if "area" in ann else float(mask.sum())
            instances.append((-area, ann.get("id", 0), cat_to_label[ann["category_id"]], mask))
    for _, _, cls, mask in sorted(instances, key=lambda t: (t[0], t[1])):
        label[mask] = cls
        painted |= mask
    for mask in crowds:
        label[mask & ~painted] = IGNORE_LABEL
    return label


def _write_mask(task: tuple[str, int, int, list[dict], dict[int, int]]) -> None:
    dest, h, w, annotations, cat_to_label = task
    try:
        mask = semantic_mask(annotations, h, w, cat_to_label)
    except InputError as exc:
        raise InputError(f"{dest}: {exc}") from exc
    write_label_png(dest, mask)


def _categories(instances: dict, path: Path) -> list[dict]:
    cats = instances.get("categories")
    if not cats:
        raise InputError(f"{path}: no 'categories'")
    return sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in cats), key=lambda c: c["id"])


def _split_items(instances: dict, path: Path, cat_to_label: dict[int, int]) -> list[tuple[dict, list[dict]]]:
    """(image, annotations) for every image with at least one annotation, sorted by file name."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in instances.get("annotations", []):
        if ann.get("category_id") not in cat_to_label:
            raise InputError(f"{path}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')}")
        by_image[ann["image_id"]].append(ann)
    images = {img["id"]: img for img in instances.get("images", [])}
    missing = set(by_image) - set(images)
    if missing:
        raise InputError(f"{path}: annotations refer to image id(s) {sorted(missing)[:5]} absent from 'images'")
    kept = sorted((images[i] for i in by_image), key=lambda img: img["file_name"])
    expected = FULL_ANNOTATED.get(len(images))
    if expected is not None and len(kept) != expected:
        log.warning("%s: %d annotated images, the WSSS lists have %d", path, len(kept), expected)
    log.info("%s: %d images, %d with annotations", path, len(images), len(kept))
    return [(img, by_image[img["id"]]) for img in kept]


def _link_images(items: list[tuple[dict, list[dict]]], image_dir: Path, links_dir: Path, ann_path: Path) -> None:
    links_dir.mkdir(parents=True, exist_ok=True)
    real_links = os.path.realpath(links_dir)
    for img, _ in items:
        src = image_dir / img["file_name"]
        link = links_dir / f"{Path(img['file_name']).stem}.jpg"
        if link.is_file():
            continue
        if not src.is_file():
            raise InputError(f"{src}: image listed in {ann_path} not found")
        if os.path.lexists(link):
            link.unlink()
        os.symlink(os.path.relpath(os.path.realpath(src), real_links), link)


def prepare_coco(
    out_dir: Path,
    *,
    train_images: Path,
    val_images: Path,
    train_json: Path,
    val_json: Path,
    links_dir: Path,
    workers: int = 1,
    name: str = "coco14",
    sources: list[dict] | None = None,
) -> dict[str, int]:
    """Write COCO 2014 into ``out_dir`` in the common layout; return the split sizes.

    ``links_dir`` (outside ``out_dir``) receives one symlink per image; masks already in
    ``out_dir`` from an interrupted run are kept. ``workers`` > 1 paints masks in a process pool.
    """
    out_dir, links_dir = Path(out_dir), Path(links_dir)
    splits: dict[str, list[str]] = {}
    labels: dict[str, list[int]] = {}
    classes: list[str] | None = None
    reference: tuple[Path, list[dict]] | None = None
    for split, image_dir, ann_path in (
        ("train", Path(train_images), Path(train_json)),
        ("val", Path(val_images), Path(val_json)),
    ):
        instances = read_json(ann_path)
        cats = _categories(instances, ann_path)
        if reference is None:
            reference = (ann_path, cats)
        elif cats != reference[1]:
            raise InputError(f"{ann_path}: categories differ from those of {reference[0]}")
        cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        classes = ["background"] + [c["name"] for c in cats]
        items = _split_items(instances, ann_path, cat_to_label)
        del instances
        _link_images(items, image_dir, links_dir, ann_path)
        tasks = []
        for img, anns in items:
            stem = Path(img["file_name"]).stem
            labels[stem] = sorted({cat_to_label[a["category_id"]] for a in anns})
            dest = out_dir / MASK_DIR / f"{stem}.png"
            if not dest.is_file():
                tasks.append((str(dest), int(img["height"]), int(img["width"]), anns, cat_to_label))
        log.info(
            "%s: %d masks to paint, %d kept from an earlier run", ann_path.name, len(tasks), len(items) - len(tasks)
        )
        if workers > 1 and len(tasks) > 1:
            with multiprocessing.Pool(workers) as pool:
                for _ in tqdm(
                    pool.imap_unordered(_write_mask, tasks, chunksize=32),
                    total=len(tasks),
                    desc=f"COCO {split} masks",
                    mininterval=5,
                ):
                    pass
        else:
            for task in tqdm(tasks, desc=f"COCO {split} masks", mininterval=5):
                _write_mask(task)
        stems = [Path(img["file_name"]).stem for img, _ in items]
        if split == "train":
            splits["train_aug"] = stems
            splits["train"] = stems
        else:
            splits["val"] = stems

    for split, ids in splits.items():
        write_text(out_dir / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    write_json(out_dir / "cls_labels.json", labels)
    write_json(
        out_dir / "meta.json",
        {
            "name": name,
            "classes": classes,
            "image_dir": relative_dir(links_dir, out_dir),
            "mask_dir": MASK_DIR,
            "sources": sources or [],
        },
    )
    return {split: len(ids) for split, ids in splits.items()}
