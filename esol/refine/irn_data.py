"""IRN's training samples: an image and its IR labels (0 background, class ids, 255 uncertain),
rescaled, flipped and cropped together; the labels then go to the stride-4 grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from esol.data.layout import Dataset
from esol.data.loaders import EpochSeededSet, augment_pair
from esol.infra.io import InputError, read_label_png
from esol.refine.affinity import downsample_labels
from esol.refine.random_walk import STRIDE


class IRLabelTrainSet(EpochSeededSet):
    """(normalised crop (3, C, C), IR labels on its grid (C/4, C/4) int64) per image of a split,
    augmented as the segmentation net's samples (:func:`esol.data.loaders.augment_pair`, bicubic as
    IRN): rescale, flip, crop padded with 0 after normalising; draws from (seed, epoch, index), the
    epoch carried with the index so that worker processes augment each epoch afresh."""

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        label_dir: Path,
        crop_size: int,
        scale_range: tuple[float, float],
        seed: int,
    ) -> None:
        super().__init__(dataset, split, seed)
        self.label_dir, self.crop_size, self.scale_range = Path(label_dir), crop_size, scale_range

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        rng, image_id, image = self.draw(index)
        path = self.label_dir / f"{image_id}.png"
        label = read_label_png(path, self.dataset.num_classes)
        if image.shape[:2] != label.shape:
            raise InputError(f"{path}: size {label.shape} differs from its image {image.shape[:2]}")
        x, label = augment_pair(rng, image, label, self.crop_size, tuple(self.scale_range), Image.BICUBIC)
        grid = downsample_labels(np.ascontiguousarray(label), STRIDE)
        return x, torch.from_numpy(grid.astype(np.int64))
