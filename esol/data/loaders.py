"""torch Datasets over :class:`esol.data.layout.Dataset` for each way a step reads images."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from esol.data.layout import Dataset
from esol.infra.io import IGNORE_LABEL, read_label_png

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


def random_crop(rng: np.random.Generator, crop: int, *arrays: np.ndarray, fills: tuple[float, ...]) -> list[np.ndarray]:
    """One ``crop`` x ``crop`` window at a random place, the same for all ``arrays`` (H, W, ...).

    As IRN's ``imutils.random_crop``: along a side longer than the crop, the window is cut at a
    random place inside the image; along a shorter one, the image is put at a random place inside
    the window and the rest is filled (``fills``, one per array). One ``rng.integers`` draw per
    side, so an image exactly the crop size consumes the generator as it always did.
    """
    h, w = arrays[0].shape[:2]
    top = int(rng.integers(0, abs(h - crop) + 1))
    left = int(rng.integers(0, abs(w - crop) + 1))
    src_y, dst_y = (top, 0) if h >= crop else (0, top)
    src_x, dst_x = (left, 0) if w >= crop else (0, left)
    ch, cw = min(h, crop), min(w, crop)
    out = []
    for array, fill in zip(arrays, fills, strict=True):
        window = array[src_y : src_y + ch, src_x : src_x + cw]
        if (ch, cw) != (crop, crop):
            canvas = np.full((crop, crop, *array.shape[2:]), fill, dtype=array.dtype)
            canvas[dst_y : dst_y + ch, dst_x : dst_x + cw] = window
            window = canvas
        out.append(window)
    return out


def resize_long_side(rng: np.random.Generator, image: np.ndarray, long_range: tuple[int, int]) -> np.ndarray:
    """Rescale ``image`` so that its long side takes a random length in ``long_range`` (inclusive;
    bicubic, as IRN's ``imutils.random_resize_long``)."""
    target = int(rng.integers(long_range[0], long_range[1] + 1))
    h, w = image.shape[:2]
    scale = target / max(h, w)
    size = (int(np.round(w * scale)), int(np.round(h * scale)))
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.BICUBIC))


def split_epoch_index(index: int | tuple[int, int], epoch: int) -> tuple[int, int]:
    """``(epoch, index)`` from what the sampler handed over: an ``(epoch, index)`` pair
    (:class:`esol.training.loop.EpochPermutation` with ``carry_epoch``), or a bare index read at ``epoch``."""
    if isinstance(index, tuple):
        return int(index[0]), int(index[1])
    return epoch, int(index)


class EpochSeededSet(TorchDataset):
    """The images of one split, each sample drawn from (seed, epoch, index).

    The epoch comes with the index (the training sampler's ``(epoch, index)`` pairs, see
    :func:`split_epoch_index`), so worker processes augment each epoch afresh.
    """

    takes_epoch_index = True

    def __init__(self, dataset: Dataset, split: str, seed: int) -> None:
        self.dataset, self.ids, self.seed, self.epoch = dataset, dataset.ids(split), seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def draw(self, index: int | tuple[int, int]) -> tuple[np.random.Generator, str, np.ndarray]:
        """This sample's generator, image id and image (H, W, 3) uint8."""
        epoch, index = split_epoch_index(index, self.epoch)
        image_id = self.ids[index]
        return np.random.default_rng([self.seed, epoch, index]), image_id, self.dataset.image(image_id)


class ClassificationSet(EpochSeededSet):
    """Images with multi-hot image-level labels, augmented as IRN's classifier input
    (``voc12/dataloader.py``): long side rescaled to a random length in ``resize_long`` (None: kept),
    ImageNet-normalised, flipped at random, and cut to a random ``crop_size`` window, padded
    with 0 after normalising (the mean colour) where the image is smaller than the crop.

    Draws are a pure function of (seed, epoch, index); the epoch comes with the index (the
    training sampler's ``(epoch, index)`` pairs), so worker processes augment each epoch afresh.
    """

    def __init__(
        self, dataset: Dataset, split: str, crop_size: int, seed: int, resize_long: tuple[int, int] | None = None
    ) -> None:
        super().__init__(dataset, split, seed)
        self.crop_size = crop_size
        self.resize_long = tuple(resize_long) if resize_long else None

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        rng, image_id, image = self.draw(index)
        if self.resize_long:
            image = resize_long_side(rng, image, self.resize_long)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        x = normalize(image).numpy().transpose(1, 2, 0)  # (H, W, 3) view: crop and pad after normalising
        (x,) = random_crop(rng, self.crop_size, x, fills=(0.0,))
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(
            self.dataset.multi_hot(image_id)
        )


def rescale_pair(
    image: np.ndarray, label: np.ndarray, scale: float, image_resample: int = Image.BILINEAR
) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear) and label map (nearest: no invented class ids) resized by ``scale`` to the
    same size, round(h * scale) x round(w * scale)."""
    h, w = label.shape
    size = (max(round(w * scale), 1), max(round(h * scale), 1))
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(size, image_resample)
    return np.asarray(resized), np.asarray(Image.fromarray(np.ascontiguousarray(label)).resize(size, Image.NEAREST))


def augment_pair(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    crop_size: int,
    scale_range: tuple[float, float] = (1.0, 1.0),
    image_resample: int = Image.BILINEAR,
) -> tuple[torch.Tensor, np.ndarray]:
    """The segmentation training transform: random rescale in ``scale_range`` (no draw when it is
    (1, 1)), horizontal flip, then one random crop of ``crop_size``; the image is padded with 0
    after normalising (the mean colour), the labels with 255 (ignored)."""
    if scale_range != (1.0, 1.0):
        image, label = rescale_pair(image, label, float(rng.uniform(*scale_range)), image_resample)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    # Normalised before cropping: the same values as normalising the crop, and padding is then 0.
    hwc = normalize(image).numpy().transpose(1, 2, 0)
    hwc, label = random_crop(rng, crop_size, hwc, label, fills=(0, IGNORE_LABEL))
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1))), label


class SegmentationTrainSet(EpochSeededSet):
    """Images with label maps from ``label_dir`` (pseudo labels), augmented together (:func:`augment_pair`)."""

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        label_dir: Path,
        crop_size: int,
        seed: int,
        scale_range: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__(dataset, split, seed)
        self.label_dir, self.crop_size = Path(label_dir), crop_size
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        rng, image_id, image = self.draw(index)
        label = read_label_png(self.label_dir / f"{image_id}.png", self.dataset.num_classes)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{self.label_dir / image_id}.png: size {label.shape} differs from its image {image.shape[:2]}"
            )
        x, label = augment_pair(rng, image, label, self.crop_size, self.scale_range)
        return x, torch.from_numpy(label.astype(np.int64))


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
