"""The segmentation training transform: rescale, flip, crop keep image and labels aligned; the
synthetic default (no rescale) is the transform it replaced, bit for bit."""

import numpy as np
import pytest
import torch
from PIL import Image

from esol.data.loaders import IMAGENET_MEAN, IMAGENET_STD, augment_pair, normalize, random_crop, rescale_pair
from esol.infra.io import IGNORE_LABEL

PALETTE = np.array([[10, 20, 30], [200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.uint8)


def shapes_label(h: int = 60, w: int = 80) -> np.ndarray:
    """A label map of known shapes: two rectangles and a disc on background."""
    label = np.zeros((h, w), np.uint8)
    label[5:25, 8:40] = 1
    label[30:55, 50:75] = 2
    yy, xx = np.mgrid[:h, :w]
    label[(yy - 40) ** 2 + (xx - 20) ** 2 < 100] = 3
    return label


def colours_of(x: torch.Tensor) -> np.ndarray:
    """A normalised (3, H, W) tensor back to (H, W, 3) uint8 colours."""
    hwc = x.numpy().transpose(1, 2, 0)
    return np.rint((hwc * IMAGENET_STD + IMAGENET_MEAN) * 255).astype(np.int64)


def old_transform(rng, image, label, crop):
    """The transform before rescaling existed (flip, crop, then normalise)."""
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    image, label = random_crop(rng, crop, image, label, fills=(0, IGNORE_LABEL))
    return normalize(image), label


@pytest.mark.parametrize("crop", [48, 60])
def test_without_rescale_the_transform_is_the_old_one_bit_for_bit(crop):
    label = shapes_label()
    image = np.random.default_rng(0).integers(0, 256, (*label.shape, 3), dtype=np.uint8)
    for index in range(12):
        x_new, y_new = augment_pair(np.random.default_rng([7, 0, index]), image, label, crop)
        x_old, y_old = old_transform(np.random.default_rng([7, 0, index]), image, label, crop)
        assert torch.equal(x_new, x_old)
        assert np.array_equal(y_new, y_old)


@pytest.mark.parametrize("crop", [40, 100])  # 100: wider than some rescaled images, padded
def test_rescale_flip_crop_keep_image_and_labels_aligned_pixel_for_pixel(crop):
    label = shapes_label()
    image = PALETTE[label]
    scales_seen = set()
    for index in range(16):
        rng = np.random.default_rng([3, 1, index])
        x, y = augment_pair(rng, image, label, crop, (0.5, 1.5), image_resample=Image.NEAREST)
        assert x.shape == (3, crop, crop) and y.shape == (crop, crop)
        padded = y == IGNORE_LABEL
        assert torch.all(x[:, torch.from_numpy(padded)] == 0)  # padding is the mean colour
        assert np.array_equal(colours_of(x)[~padded], PALETTE[y[~padded]].astype(np.int64))
        scales_seen.add(round(float(np.random.default_rng([3, 1, index]).uniform(0.5, 1.5)), 1))
        if crop == 100:
            assert padded.any()
    assert len(scales_seen) > 3  # the rescale really varies


def test_bilinear_image_agrees_with_nearest_labels_away_from_edges():
    label = shapes_label()
    image = PALETTE[label]
    for index in range(8):
        x, y = augment_pair(np.random.default_rng([5, 0, index]), image, label, 48, (0.5, 1.5))
        colours = colours_of(x)
        interior = np.ones_like(y, dtype=bool)  # pixels whose 5 x 5 neighbourhood has one label
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                interior &= np.roll(y, (dy, dx), (0, 1)) == y
        interior[:2] = interior[-2:] = interior[:, :2] = interior[:, -2:] = False
        interior &= y != IGNORE_LABEL
        assert interior.sum() > 500
        assert np.abs(colours[interior] - PALETTE[y[interior]]).max() <= 1


def test_rescaled_labels_are_the_nearest_neighbour_map_of_the_shapes():
    label = shapes_label()
    for scale in (0.5, 0.75, 1.3, 1.5):
        _, resized = rescale_pair(PALETTE[label], label, scale)
        h, w = resized.shape
        assert (h, w) == (round(60 * scale), round(80 * scale))
        # Output pixel i samples source pixel floor((i + 0.5) * in / out); at an exact tie PIL may
        # take the pixel before: accept either side of a tie, nothing else.
        candidates = []
        for eps in (-1e-6, 1e-6):
            rows = np.clip(((np.arange(h) + 0.5) * 60 / h + eps).astype(int), 0, 59)
            cols = np.clip(((np.arange(w) + 0.5) * 80 / w + eps).astype(int), 0, 79)
            candidates.append(label[rows][:, cols])
        assert np.all((resized == candidates[0]) | (resized == candidates[1]))
        assert (resized == candidates[1]).mean() > 0.97
        assert set(np.unique(resized)) <= {0, 1, 2, 3}
