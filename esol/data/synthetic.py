"""The built-in synthetic dataset, made to reproduce the two failures ESOL targets.

* Incompleteness: every object's body wears one texture shared by all classes; only a smaller
  part of it (``part_fraction`` of its area, at one end) wears the class-specific texture, so a
  classifier needs, and plain CAM finds, mainly that part.
* Context leakage: each class has its own background texture, which fills the image
  ``context_prob`` of the time when that class is present (and sometimes appears without it),
  so plain CAM also fires on that background.

Images are generated independently from ``(seed, index)``, written in the layout of
:mod:`esol.data.layout` (JPEG images, palette PNG masks with a 255 ignore band at object
borders, split lists, image-level labels).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from esol.infra.config import SyntheticConfig
from esol.infra.io import IGNORE_LABEL, write_jpeg, write_json, write_label_png, write_text
from esol.infra.progress import tqdm

NUM_NEUTRAL_BACKGROUNDS = 3
SHAPE_NAMES = ("ellipse", "rectangle")


@dataclass(frozen=True)
class Texture:
    """An oriented two-colour grating with a little noise."""

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    period: float  # pixels
    angle: float  # radians

    def render(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi)
        angle = self.angle + rng.normal(0, 0.08)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / self.period + phase)
        t = (wave[..., None] + 1) / 2
        a, b = np.asarray(self.color_a), np.asarray(self.color_b)
        img = a * (1 - t) + b * t
        return img + rng.normal(0, 0.04, size=img.shape)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def make_textures(num_classes: int) -> tuple[list[Texture], list[Texture], list[Texture], list[Texture]]:
    """Class part textures, class context textures, neutral backgrounds, per-class body textures.

    Every body wears the same grey grating, so the body is not discriminative (a real object's
    body is less discriminative than its most telling part).

    Fixed (not seeded): the dataset seed varies the images, not the visual vocabulary.
    """
    parts, contexts = [], []
    for c in range(num_classes):
        hue = c / num_classes
        parts.append(Texture(_hsv(hue, 0.9, 0.95), _hsv(hue + 0.5, 0.9, 0.35), 5.0 + (c % 3), np.pi * c / num_classes))
        contexts.append(
            Texture(
                _hsv(hue + 0.08, 0.45, 0.6),
                _hsv(hue + 0.08, 0.45, 0.3),
                11.0 + 2 * (c % 3),
                np.pi * (c + 0.5) / num_classes,
            )
        )
    neutrals = [
        Texture(_hsv(0.1 + 0.3 * i, 0.15, 0.55), _hsv(0.1 + 0.3 * i, 0.15, 0.35), 14.0 + 3 * i, 0.7 * i + 0.2)
        for i in range(NUM_NEUTRAL_BACKGROUNDS)
    ]
    grey_a, grey_b = np.array([0.78, 0.78, 0.74]), np.array([0.45, 0.45, 0.5])
    bodies = [Texture(tuple(grey_a), tuple(grey_b), 4.0, np.pi / 4) for _ in range(num_classes)]
    return parts, contexts, neutrals, bodies


def _object_mask(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random shape and, for each pixel, its coordinate along the shape's long axis (0..1)."""
    size = min(h, w)
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    a = rng.uniform(0.20, 0.32) * size  # half length
    b = a * rng.uniform(0.45, 0.8)  # half width
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    if rng.integers(len(SHAPE_NAMES)) == 0:
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1
    else:
        inside = (np.abs(u) <= a) & (np.abs(v) <= b)
    if rng.random() < 0.5:
        u = -u
    return inside, (u + a) / (2 * a)


REGION_BACKGROUND, REGION_CONTEXT, REGION_BODY, REGION_PART = 0, 1, 2, 3


def generate_sample(
    cfg: SyntheticConfig, seed: int, index: int, textures: tuple | None = None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One image: (H, W, 3) uint8, (H, W) uint8 mask, sorted foreground class ids (1-based)."""
    image, mask, present, _ = generate_sample_with_regions(cfg, seed, index, textures)
    return image, mask, present


def generate_sample_with_regions(
    cfg: SyntheticConfig, seed: int, index: int, textures: tuple | None = None
) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """As :func:`generate_sample`, plus a (H, W) region map for diagnostics: REGION_PART
    (class-specific texture), REGION_BODY (shared texture), REGION_CONTEXT (background wearing
    a present class's context texture) or REGION_BACKGROUND."""
    parts, contexts, neutrals, bodies = textures or make_textures(cfg.num_classes)
    rng = np.random.default_rng([seed, index])
    h = w = cfg.image_size
    n_objects = int(rng.integers(1, cfg.max_objects + 1))
    classes = rng.choice(cfg.num_classes, size=n_objects, replace=False)

    in_context = rng.random() < cfg.context_prob
    if in_context:
        background = contexts[int(rng.choice(classes))]
    else:
        # Absent classes' contexts appear too, so context alone does not prove a class.
        absent = [contexts[c] for c in range(cfg.num_classes) if c not in classes]
        pool = neutrals + absent
        background = pool[int(rng.integers(len(pool)))]
    image = background.render(h, w, rng)
    mask = np.zeros((h, w), dtype=np.uint8)
    regions = np.full((h, w), REGION_CONTEXT if in_context else REGION_BACKGROUND, dtype=np.uint8)

    for c in classes:
        inside, along = _object_mask(h, w, rng)
        image[inside] = bodies[c].render(h, w, rng)[inside]
        part = inside & (along >= 1 - cfg.part_fraction)
        image[part] = parts[c].render(h, w, rng)[part]
        mask[inside] = c + 1
        regions[inside] = REGION_BODY
        regions[part] = REGION_PART

    present = sorted(int(c) for c in np.unique(mask) if c != 0 and (mask == c).sum() >= 20)
    edges = np.zeros_like(mask, dtype=bool)
    for c in np.unique(mask):
        region = mask == c
        edges |= region & ~ndimage.binary_erosion(region, iterations=1, border_value=1)
    mask[edges & (mask != 0) | ndimage.binary_dilation(mask != 0) & (mask == 0)] = IGNORE_LABEL
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return image, mask, present, regions


def generate(root: str | Path, cfg: SyntheticConfig, seed: int) -> dict[str, int]:
    """Write the whole synthetic dataset under ``root``; returns the split sizes."""
    root = Path(root)
    textures = make_textures(cfg.num_classes)
    if cfg.num_train > cfg.num_train_aug:
        raise ValueError("synthetic.num_train must not exceed synthetic.num_train_aug")
    train_aug = [f"syn_{i:05d}" for i in range(cfg.num_train_aug)]
    val = [f"synval_{i:05d}" for i in range(cfg.num_val)]
    labels: dict[str, list[int]] = {}
    jobs = [(image_id, i) for i, image_id in enumerate(train_aug)]
    jobs += [(image_id, 1_000_000 + i) for i, image_id in enumerate(val)]
    for image_id, index in tqdm(jobs, desc="synthetic images", mininterval=2):
        image, mask, present, regions = generate_sample_with_regions(cfg, seed, index, textures)
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", image)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        write_label_png(root / "Regions" / f"{image_id}.png", regions)
        labels[image_id] = present
    splits = {"train_aug": train_aug, "train": train_aug[: cfg.num_train], "val": val}
    for split, ids in splits.items():
        write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(ids) + "\n")
    write_json(root / "cls_labels.json", labels)
    classes = ["background"] + [f"class{c + 1}" for c in range(cfg.num_classes)]
    write_json(root / "meta.json", {"name": "synthetic", "classes": classes, "seed": seed})
    return {split: len(ids) for split, ids in splits.items()}
