"""torch Datasets over :class:`esol.data.layout.Dataset` for each way a step reads images."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from esol.data.layout import Dataset
from esol.io import IGNORE_LABEL, read_label_png

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_MEAN_CHW, _STD_CHW = IMAGENET_MEAN.reshape(3, 1, 1), IMAGENET_STD.reshape(3, 1, 1)


def normalize(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32, ImageNet-normalised: (x / 255 - mean) / std.

    Transposed while still uint8 and computed in place: the same float32 values as the three
    operations one after the other, in one array instead of five.
    """
    x = image.transpose(2, 0, 1).astype(np.float32, order="C")
    x /= 255.0
    x -= _MEAN_CHW
    x /= _STD_CHW
    return torch.from_numpy(x)


def random_crop(rng: np.random.Generator, crop: int, *arrays: np.ndarray, fills: tuple[int, ...]) -> list[np.ndarray]:
    """Pad (with per-array fill values) to at least ``crop`` and take one random crop of all arrays."""
    h, w = arrays[0].shape[:2]
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    out = []
    top = int(rng.integers(0, h + ph - crop + 1))
    left = int(rng.integers(0, w + pw - crop + 1))
    for array, fill in zip(arrays, fills, strict=True):
        if ph or pw:
            pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
            array = np.pad(array, pad, constant_values=fill)
        out.append(array[top : top + crop, left : left + crop])
    return out


class ClassificationSet(TorchDataset):
    """Images with multi-hot image-level labels, randomly flipped and cropped (classifier training)."""

    def __init__(self, dataset: Dataset, split: str, crop_size: int, seed: int) -> None:
        self.dataset, self.ids, self.crop_size, self.seed = dataset, dataset.ids(split), crop_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image_id = self.ids[index]
        image = self.dataset.image(image_id)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        (image,) = random_crop(rng, self.crop_size, image, fills=(0,))
        return normalize(image), torch.from_numpy(self.dataset.multi_hot(image_id))


class SegmentationTrainSet(TorchDataset):
    """Images with label maps from ``label_dir`` (pseudo labels), flipped and cropped together."""

    def __init__(self, dataset: Dataset, split: str, label_dir: Path, crop_size: int, seed: int) -> None:
        self.dataset, self.ids, self.label_dir = dataset, dataset.ids(split), Path(label_dir)
        self.crop_size, self.seed, self.epoch = crop_size, seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image_id = self.ids[index]
        image = self.dataset.image(image_id)
        label = read_label_png(self.label_dir / f"{image_id}.png", self.dataset.num_classes)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{self.label_dir / image_id}.png: size {label.shape} differs from its image {image.shape[:2]}"
            )
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        image, label = random_crop(rng, self.crop_size, image, label, fills=(0, IGNORE_LABEL))
        return normalize(image), torch.from_numpy(label.astype(np.int64))


class InferenceSet(TorchDataset):
    """Whole images (unaugmented) with their ids, for CAM inference and evaluation."""

    def __init__(self, dataset: Dataset, ids: list[str]) -> None:
        self.dataset, self.ids = dataset, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        image_id = self.ids[index]
        return image_id, self.dataset.image(image_id)


def collate_inference(batch: list[tuple[str, np.ndarray]]) -> tuple[list[str], list[np.ndarray]]:
    ids, images = zip(*batch, strict=True)
    return list(ids), list(images)


T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer.

    For a DataLoader without worker processes: the next batch is read (JPEG decoding releases
    the GIL) while the model computes on this one. Errors surface in the consumer.
    """
    ahead: queue.Queue = queue.Queue(maxsize=depth)

    def fill() -> None:
        try:
            for item in items:
                ahead.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            ahead.put(_Failed(exc))
        finally:
            ahead.put(_DONE)

    threading.Thread(target=fill, name="prefetch", daemon=True).start()
    while (item := ahead.get()) is not _DONE:
        if isinstance(item, _Failed):
            raise item.exc
        yield item


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
