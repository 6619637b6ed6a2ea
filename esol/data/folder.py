"""Your own images as a dataset (``dataset.name: folder``), validated and written into the common layout.

The folder (``folder.root``) holds (full spec: docs/own-data.md):

* ``images/``: JPEG or PNG files, any size, RGB or greyscale (converted to RGB when read);
* ``labels.csv``: header ``image,labels``, one row per image: its file name in ``images/``, then
  its class names separated by ``|`` (an empty field: background only);
* ``classes.txt``: one class name a line, the order of the class ids 1..K (background is 0, unlisted);
* optional ``masks/<stem>.png``: label maps, values 0..K, 255 ignored; the images with a mask are
  the scored ones (seeds and pseudo labels on train, segmentation on val);
* optional ``splits/train.txt`` and ``splits/val.txt`` (image stems); without them a seeded split
  draws ``folder.val_fraction`` of the images (masked and unmasked ones separately) into val.

Validation reads the csv, the class list, the directory listings and each image's header (size,
format, mode), decoding only the masks. Every problem is collected; one :class:`InputError` names
the first (file and line) and counts the others. Nothing is copied or linked: ``image_dir`` and
``mask_dir`` of the prepared dataset point at ``images/`` and ``masks/``, as the VOC layout points
at the extracted archive, so DVC caches only the small files.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from esol.data.layout import IMAGE_FILES, relative_dir
from esol.infra.config import FolderConfig
from esol.infra.io import IGNORE_LABEL, InputError, write_json, write_text

log = logging.getLogger("esol.folder")

IMAGES_DIR, MASKS_DIR, SPLITS_DIR = "images", "masks", "splits"
LABELS_FILE, CLASSES_FILE = "labels.csv", "classes.txt"
HEADER = ["image", "labels"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_FORMATS = ("JPEG", "MPO", "PNG")  # MPO: the multi-picture JPEG of many phone cameras
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")  # what converts to 8-bit RGB
MAX_CLASSES = 254  # class ids and 255 (ignore) share a uint8 label map


@dataclass(frozen=True)
class Problem:
    """One bad input: where (file, 1-based line or None) and what."""

    kind: str
    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}, line {self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


@dataclass
class Problems:
    """Collects every problem, then raises one error: the first in full, the others counted by kind."""

    found: list[Problem] = field(default_factory=list)

    def add(self, kind: str, path: Path, line: int | None, message: str) -> None:
        self.found.append(Problem(kind, path, line, message))

    def raise_if_any(self) -> None:
        if not self.found:
            return
        first, others = self.found[0], self.found[1:]
        message = str(first)
        if others:
            counts = Counter(p.kind for p in others)
            summary = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
            message += f" (and {len(others)} more problem(s): {summary})"
        raise InputError(message)


@dataclass(frozen=True)
class FolderImage:
    """One row of labels.csv that names an image."""

    id: str  # the file's stem: masks and splits name images by it
    file: str
    line: int
    labels: tuple[int, ...]


@dataclass(frozen=True)
class FolderData:
    """A validated folder: its classes (background first), images, masks and train/val split."""

    root: Path
    classes: list[str]
    images: list[FolderImage]
    masked: frozenset[str]
    train: list[str]
    val: list[str]

    @property
    def has_masks(self) -> bool:
        return bool(self.masked)


def write_labels(root: Path, rows: list[tuple[str, list[str]]], classes: list[str]) -> None:
    """Write ``labels.csv`` (rows: file name, class names) and ``classes.txt`` into ``root``, in the
    format :func:`read_folder` reads (the example folder and the benchmark write theirs so)."""
    with open(root / LABELS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows((name, "|".join(names)) for name, names in rows)
    (root / CLASSES_FILE).write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")


def read_classes(path: Path) -> list[str]:
    """The class names of classes.txt (ids 1..K, in file order); at least two, none twice."""
    if not path.is_file():
        raise InputError(f"{path}: class list not found (one class name a line, background not listed)")
    problems = Problems()
    names: list[str] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        if name.lower() == "background":
            problems.add("background listed", path, line_no, "background is class 0 and is not listed")
        elif "|" in name:
            problems.add("bad class name", path, line_no, f"class name {name!r} contains '|', the labels separator")
        elif name in seen:
            problems.add("duplicate class", path, line_no, f"class {name!r} already on line {seen[name]}")
        else:
            seen[name] = line_no
            names.append(name)
    problems.raise_if_any()
    if len(names) < 2:
        raise InputError(
            f"{path}: {len(names)} class(es) listed; at least two are needed (a classifier trained on one class "
            "that every image shows learns nothing, and its CAMs stay black)"
        )
    if len(names) > MAX_CLASSES:
        raise InputError(f"{path}: {len(names)} classes listed; at most {MAX_CLASSES} fit a label map (255 = ignore)")
    return names


def list_files(directory: Path, suffixes: tuple[str, ...]) -> dict[str, str]:
    """File names in ``directory`` (not recursive, hidden files skipped) with one of ``suffixes``
    (case-insensitive), by name; {} when the directory is missing."""
    if not directory.is_dir():
        return {}
    with os.scandir(directory) as entries:
        return {
            e.name: e.name
            for e in entries
            if not e.name.startswith(".") and e.name.lower().endswith(suffixes) and e.is_file()
        }


def read_labels(path: Path, classes: list[str], on_disk: dict[str, str], problems: Problems) -> list[FolderImage]:
    """The rows of labels.csv, checked against the class list and the files in images/."""
    if not path.is_file():
        raise InputError(f"{path}: image-level labels not found (header {','.join(HEADER)})")
    class_ids = {name: i for i, name in enumerate(classes, start=1)}
    images: list[FolderImage] = []
    by_file: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != HEADER:
            raise InputError(f"{path}, line 1: header must be {','.join(HEADER)!r}, got {','.join(header or [])!r}")
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                problems.add("malformed row", path, line, f"{len(row)} field(s); expected 'file name,labels'")
                continue
            name, label_field = row[0].strip(), row[1]
            stem, suffix = os.path.splitext(name)
            if not name or "/" in name or "\\" in name:
                problems.add("bad image name", path, line, f"{name!r} is not a file name in images/")
                continue
            if name in by_file:
                problems.add("duplicate row", path, line, f"duplicate row: {name} is already on line {by_file[name]}")
                continue
            by_file[name] = line
            if stem in by_stem:
                problems.add(
                    "duplicate stem", path, line, f"{name}: stem {stem!r} also names line {by_stem[stem]}'s image"
                )
                continue
            by_stem[stem] = line
            if suffix.lower() not in IMAGE_SUFFIXES:
                problems.add("not JPEG or PNG", path, line, f"{name}: not a JPEG or PNG file name")
                continue
            wanted = [n.strip() for n in label_field.split("|") if n.strip()]
            unknown = [n for n in wanted if n not in class_ids]
            if unknown:
                problems.add(
                    "unknown class name",
                    path,
                    line,
                    f"unknown class name(s) {', '.join(map(repr, unknown))} for {name} "
                    f"(classes.txt lists {', '.join(classes)})",
                )
                continue
            if name not in on_disk:
                problems.add(
                    "missing image", path, line, f"image {name} is listed but not in {path.parent / IMAGES_DIR}"
                )
                continue
            images.append(FolderImage(stem, name, line, tuple(sorted({class_ids[n] for n in wanted}))))
    return images


def image_size(path: Path, problems: Problems, where: str = "") -> tuple[int, int] | None:
    """(width, height) from the image's header; None (and a problem) when it cannot serve as an image.

    ``where`` follows "unreadable image" in the message (e.g. the labels.csv line naming the file).
    """
    try:
        with Image.open(path) as img:
            fmt, mode, size = img.format, img.mode, img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problems.add("unreadable image", path, None, f"unreadable image{where} ({exc})")
        return None
    if fmt not in IMAGE_FORMATS:
        problems.add("unreadable image", path, None, f"a {fmt} file; JPEG or PNG expected")
        return None
    if mode not in IMAGE_MODES:
        problems.add("unreadable image", path, None, f"pixel mode {mode} (e.g. 16 bit) is not supported; save as 8-bit")
        return None
    return size


def check_mask(path: Path, size: tuple[int, int], k: int, image: FolderImage, problems: Problems) -> bool:
    """Whether masks/<stem>.png fits its image (size) and the class list (values 0..K or 255)."""
    try:
        with Image.open(path) as img:
            if img.format != "PNG" or img.mode not in ("P", "L"):
                problems.add(
                    "bad mask", path, None, f"a {img.format} of mode {img.mode}; a palette or greyscale PNG expected"
                )
                return False
            if img.size != size:
                problems.add(
                    "mask of another size",
                    path,
                    None,
                    f"mask is {img.size[0]}x{img.size[1]}, but its image {image.file} is {size[0]}x{size[1]}",
                )
                return False
            counts = img.histogram()  # decodes; 256 bins for modes P and L, and faster than numpy's bincount
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problems.add("bad mask", path, None, f"unreadable mask ({exc})")
        return False
    present = np.flatnonzero(counts)
    bad = [int(v) for v in present if v > k and v != IGNORE_LABEL]
    if bad:
        problems.add("mask value outside 0..K", path, None, f"mask values {bad} outside 0..{k} (255 = ignore)")
        return False
    return True


def read_split(path: Path, known: dict[str, FolderImage], problems: Problems) -> dict[str, int]:
    """The stems of a split list (a file name with its suffix is accepted too), with their lines."""
    seen: dict[str, int] = {}
    files = {image.file: image.id for image in known.values()}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        entry = raw.strip()
        if not entry:
            continue
        image_id = files.get(entry, entry)
        if image_id not in known:
            problems.add("unknown image in split", path, line_no, f"{entry!r} is no image of labels.csv")
        elif image_id in seen:
            problems.add("duplicate split entry", path, line_no, f"{entry!r} already on line {seen[image_id]}")
        else:
            seen[image_id] = line_no
    return seen


def seeded_split(ids: list[str], masked: frozenset[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Train and val ids: ``val_fraction`` of the masked and of the unmasked images each (so both sides
    get masks when there are any), drawn with ``seed``; each list sorted."""
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    for group in (sorted(i for i in ids if i in masked), sorted(i for i in ids if i not in masked)):
        order = rng.permutation(len(group))
        n_val = round(val_fraction * len(group))
        if val_fraction > 0 and len(group) > 1:
            n_val = min(max(n_val, 1), len(group) - 1)
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return sorted(train), sorted(val)


def read_folder(cfg: FolderConfig, seed: int) -> FolderData:
    """Validate the folder ``cfg.root`` (see the module docstring); errors name the file and line."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: folder.root is not a directory")
    classes = read_classes(root / CLASSES_FILE)
    labels_path, image_dir = root / LABELS_FILE, root / IMAGES_DIR
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: image directory not found")
    on_disk = list_files(image_dir, IMAGE_SUFFIXES)
    problems = Problems()
    rows = read_labels(labels_path, classes, on_disk, problems)
    listed = {row.file for row in rows}  # (a row that failed is a problem: no warning is reached)
    sizes = {
        row.id: image_size(image_dir / row.file, problems, f", listed on {LABELS_FILE} line {row.line}") for row in rows
    }
    images = {row.id: row for row in rows if sizes[row.id] is not None}

    masked: set[str] = set()
    mask_files = list_files(root / MASKS_DIR, (".png",))
    strays = []
    for name in sorted(mask_files):
        stem = name[: -len(".png")]
        if not name.endswith(".png"):  # the layout reads <mask_dir>/<id>.png, on case-sensitive file systems too
            problems.add("bad mask", root / MASKS_DIR / name, None, f"name it {stem}.png (suffix in lower case)")
        elif stem not in images:
            strays.append(name)
        elif check_mask(root / MASKS_DIR / name, sizes[stem], len(classes), images[stem], problems):
            masked.add(stem)

    split_dir = root / SPLITS_DIR
    train = val = None
    if split_dir.is_dir():
        paths = {name: split_dir / f"{name}.txt" for name in ("train", "val")}
        for path in paths.values():
            if not path.is_file():
                raise InputError(f"{path}: not found; splits/ needs both train.txt and val.txt (or neither)")
        train_lines, val_lines = (read_split(paths[name], images, problems) for name in ("train", "val"))
        for image_id, line_no in val_lines.items():
            if image_id in train_lines:
                problems.add(
                    "image in both splits",
                    paths["val"],
                    line_no,
                    f"{image_id} is on train.txt line {train_lines[image_id]} too",
                )
        train, val = list(train_lines), list(val_lines)
    problems.raise_if_any()

    unlisted = sorted(set(on_disk) - listed)
    if unlisted:
        log.warning(
            "%s: %d image(s) on disk are not in %s and are not used, e.g. %s",
            image_dir,
            len(unlisted),
            LABELS_FILE,
            ", ".join(unlisted[:3]),
        )
    if strays:
        log.warning(
            "%s: %d mask(s) name no image of %s, e.g. %s", root / MASKS_DIR, len(strays), LABELS_FILE, strays[0]
        )
    unused_classes = sorted(set(range(1, len(classes) + 1)) - {c for row in images.values() for c in row.labels})
    if unused_classes:
        log.warning(
            "%s: class(es) %s appear in no image's labels", labels_path, [classes[c - 1] for c in unused_classes]
        )
    if train is None:
        train, val = seeded_split(list(images), frozenset(masked), cfg.val_fraction, seed)
    else:
        unused = len(images) - len(train) - len(val)
        if unused:
            log.warning("%s: %d image(s) are in neither train.txt nor val.txt and are not used", split_dir, unused)
    if not train:
        raise InputError(f"{root}: no training image (folder.val_fraction {cfg.val_fraction} or splits/train.txt)")
    return FolderData(root, ["background", *classes], list(images.values()), frozenset(masked), train, val)


def write_layout(folder: FolderData, out_dir: Path, unscored_train_sample: int, seed: int) -> dict[str, int]:
    """Write the validated folder into ``out_dir`` in the common layout; return the split sizes.

    ``train_aug`` is the train split; ``train`` (scored seeds and pseudo labels) its masked images,
    or, when none has a mask, a seeded sample of ``unscored_train_sample`` of them (shown, not scored).
    """
    out_dir = Path(out_dir)
    scored_train = [i for i in folder.train if i in folder.masked]
    if scored_train:
        train = scored_train
    else:
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(folder.train))[:unscored_train_sample]
        train = sorted(folder.train[i] for i in pick)
    splits = {"train_aug": folder.train, "train": train, "val": folder.val}
    for split, ids in splits.items():
        write_text(out_dir / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    by_id = {image.id: image for image in folder.images}
    used = sorted(set(folder.train) | set(folder.val))
    write_json(out_dir / "cls_labels.json", {i: list(by_id[i].labels) for i in used})
    write_json(out_dir / IMAGE_FILES, {i: by_id[i].file for i in used})
    root = folder.root.resolve()
    meta = {
        "name": "folder",
        "classes": folder.classes,
        "image_dir": relative_dir(root / IMAGES_DIR, out_dir),
        "mask_dir": relative_dir(root / MASKS_DIR, out_dir) if folder.has_masks else "SegmentationClass",
        "masks_optional": True,
        "source": str(root),
        "scored": {"train": len(scored_train), "val": sum(i in folder.masked for i in folder.val)},
    }
    write_json(out_dir / "meta.json", meta)
    return {split: len(ids) for split, ids in splits.items()}


def prepare_folder(out_dir: Path, cfg: FolderConfig, seed: int) -> dict[str, int]:
    """Validate ``cfg.root`` and write it into ``out_dir`` in the common layout; return the split sizes."""
    folder = read_folder(cfg, seed)
    sizes = write_layout(folder, out_dir, cfg.unscored_train_sample, seed)
    log.info(
        "folder %s: %d images, %d classes, %d with masks; splits %s",
        folder.root,
        len(folder.images),
        len(folder.classes) - 1,
        len(folder.masked),
        sizes,
    )
    return sizes
