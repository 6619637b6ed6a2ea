"""The one on-disk dataset layout every source is prepared into.

    <root>/meta.json                        name, class names (index 0 = background), dirs
    <root>/<image_dir>/<id>.jpg             RGB images
    <root>/<mask_dir>/<id>.png              palette PNG label maps, 255 = ignore
    <root>/ImageSets/Segmentation/<split>.txt
    <root>/cls_labels.json                  {id: [foreground class ids]}, image-level labels
    <root>/image_files.json                 optional {id: file name in image_dir}, when not <id>.jpg

``image_dir`` and ``mask_dir`` are relative to the root and may leave it (``../downloads/...``):
the real datasets point ``image_dir`` at the extracted archive instead of copying the images, and a
folder dataset (:mod:`esol.data.folder`) at the user's ``images/``, naming each file (JPEG or PNG,
any name) in ``image_files.json``. A dataset with ``"masks_optional": true`` in meta.json has masks
for some images only: those are the scored ones (:meth:`Dataset.scored_ids`).

Splits follow the WSSS convention: ``train_aug`` trains the classifier and the segmentation net,
``train`` (with ground truth) scores seeds and pseudo labels, ``val`` scores the segmentation net.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from esol.infra.io import InputError, read_image, read_json, read_label_png

SPLITS = ("train_aug", "train", "val")
IMAGE_FILES = "image_files.json"


def relative_dir(directory: str | Path, root: str | Path) -> str:
    """``directory`` as a path relative to ``root`` for meta.json (symlinks resolved on both sides).

    The dataset root may be renamed (``<root>.partial`` -> ``<root>``) as long as it keeps its parent.
    """
    return Path(os.path.relpath(os.path.realpath(directory), os.path.realpath(root))).as_posix()


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset on disk; every read is checked and errors name the file."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @cached_property
    def meta(self) -> dict:
        meta = read_json(self.root / "meta.json")
        for key in ("name", "classes"):
            if key not in meta:
                raise InputError(f"{self.root / 'meta.json'}: missing key {key!r}")
        return meta

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def classes(self) -> list[str]:
        """Class names, background first."""
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes)

    @property
    def image_dir(self) -> Path:
        return self.root / self.meta.get("image_dir", "JPEGImages")

    @property
    def mask_dir(self) -> Path:
        return self.root / self.meta.get("mask_dir", "SegmentationClass")

    @property
    def masks_optional(self) -> bool:
        """Whether only some images have a mask (a folder dataset); otherwise every train/val image has one."""
        return bool(self.meta.get("masks_optional", False))

    @cached_property
    def _image_files(self) -> dict[str, str]:
        path = self.root / IMAGE_FILES
        return read_json(path) if path.is_file() else {}

    def ids(self, split: str) -> list[str]:
        path = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not path.is_file():
            raise InputError(f"{path}: split list not found")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    @cached_property
    def _labels(self) -> dict[str, list[int]]:
        path = self.root / "cls_labels.json"
        labels = read_json(path)
        k = self.num_classes
        for image_id, classes in labels.items():
            bad = [c for c in classes if not isinstance(c, int) or not 1 <= c < k]
            if bad:
                raise InputError(
                    f"{path}: image {image_id} lists class id(s) {bad} absent from the class list (1..{k - 1})"
                )
        return labels

    def labels(self, image_id: str) -> list[int]:
        """Foreground class ids present in the image (image-level label)."""
        try:
            return list(self._labels[image_id])
        except KeyError:
            raise InputError(f"{self.root / 'cls_labels.json'}: no image-level label for {image_id}") from None

    def multi_hot(self, image_id: str) -> np.ndarray:
        """(K-1,) float32 vector over foreground classes."""
        vec = np.zeros(self.num_classes - 1, dtype=np.float32)
        vec[np.asarray(self.labels(image_id), dtype=int) - 1] = 1.0
        return vec

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / self._image_files.get(image_id, f"{image_id}.jpg")

    def mask_path(self, image_id: str) -> Path:
        return self.mask_dir / f"{image_id}.png"

    def image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id))

    def mask(self, image_id: str) -> np.ndarray:
        return read_label_png(self.mask_path(image_id), self.num_classes)

    def has_mask(self, image_id: str) -> bool:
        return not self.masks_optional or self.mask_path(image_id).is_file()

    def scored_ids(self, split: str) -> list[str]:
        """The images of ``split`` with ground truth, the ones scores are computed on (all of them
        unless ``masks_optional``; then possibly none)."""
        if not self.masks_optional:  # reads meta.json first: a missing dataset is named by it
            return self.ids(split)
        return [i for i in self.ids(split) if self.has_mask(i)]

    def check(self) -> dict[str, int]:
        """Verify that every split's images, masks and labels exist and agree; return split sizes."""
        sizes = {}
        if not self.image_dir.is_dir():
            raise InputError(f"{self.image_dir}: image_dir of {self.root / 'meta.json'} is not a directory")
        for split in SPLITS:
            ids = self.ids(split)
            for image_id in ids:
                if not self.image_path(image_id).is_file():
                    raise InputError(f"{self.image_path(image_id)}: image listed in {split}.txt not found")
                self.labels(image_id)
                if split != "train_aug" and not self.masks_optional and not self.mask_path(image_id).is_file():
                    raise InputError(f"{self.mask_path(image_id)}: mask for {split} image not found")
            sizes[split] = len(ids)
        return sizes
