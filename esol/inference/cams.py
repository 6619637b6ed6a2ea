"""Multi-scale, flipped CAM inference and the compact CAM file format.

A CAM file (``<id>.npz``) holds ``keys`` (the image's foreground class ids, 1-based) and
``cams``: (len(keys), H, W) uint8, the max-normalised CAMs at image resolution quantised to
1/255. That is a quarter of the float32 bytes (before compression) for a threshold error of
at most 0.002.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from esol.data.loaders import normalize
from esol.infra.io import InputError, save_npz
from esol.method.model import ESOLNet

CAM_LEVELS = 255


@torch.no_grad()
def multiscale_cams(
    model: ESOLNet,
    images: list[np.ndarray],
    scales: tuple[float, ...],
    flip: bool,
    device: torch.device,
    autocast=None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Sum over scales (and flips) of ReLU CAMs, upsampled to the images' size: (B, K, H, W).

    All images must share one size; scales and flips of a batch run as one forward per scale
    (the batch and its mirror image concatenated).
    """
    h, w = images[0].shape[:2]
    batch = torch.stack([normalize(img) for img in images]).to(device)
    total = None
    for scale in scales:
        size = (max(round(h * scale), 1), max(round(w * scale), 1))
        x = batch if scale == 1.0 else F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
            cams = model(x).cams.float()
        if flip:
            n = len(images)
            cams = cams[:n] + cams[n:].flip(-1)
        cams = F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False)
        total = cams if total is None else total + cams
    return total


def quantise(cams: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Keep ``keys`` (1-based) planes, max-normalise each, quantise to uint8."""
    planes = cams[keys - 1]
    peak = planes.reshape(len(keys), -1).max(axis=1)[:, None, None]
    norm = planes / np.maximum(peak, 1e-5)
    return np.round(np.clip(norm, 0, 1) * CAM_LEVELS).astype(np.uint8)


def quantise_batch(cams: torch.Tensor, keys: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`quantise` for a batch, where the CAMs are (on their device): (B, K, H, W) ->
    per image (len(keys[i]), H, W) uint8. Only the kept planes, as uint8, leave the device, in
    one transfer; the arithmetic is quantise's, operation for operation (same float32 results)."""
    counts = [len(k) for k in keys]
    rows = torch.as_tensor(np.repeat(np.arange(len(keys)), counts), device=cams.device)
    classes = torch.as_tensor(np.concatenate([np.asarray(k, dtype=np.int64) for k in keys]) - 1, device=cams.device)
    planes = cams[rows, classes]  # (P, H, W)
    peak = planes.flatten(1).amax(dim=1)[:, None, None]
    norm = planes / torch.clamp(peak, min=1e-5)
    quantised = torch.round(torch.clamp(norm, 0, 1) * CAM_LEVELS).to(torch.uint8).cpu().numpy()
    return np.split(quantised, np.cumsum(counts)[:-1])


def save_cam(path: Path, keys: np.ndarray, cams_u8: np.ndarray) -> None:
    save_npz(path, keys=keys.astype(np.int16), cams=cams_u8)


def load_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (keys, cams as float32 in [0, 1])."""
    if not path.is_file():
        raise InputError(f"{path}: CAM file not found")
    try:
        with np.load(path) as data:
            keys, cams = data["keys"].astype(np.int64), data["cams"]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a readable CAM file ({exc})") from exc
    return keys, cams.astype(np.float32) / CAM_LEVELS


def seed_labels(keys: np.ndarray, cams: np.ndarray, threshold: float) -> np.ndarray:
    """Seed label map: background score ``threshold`` padded in front of the CAMs, argmax."""
    if len(keys) == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    best = cams.argmax(axis=0)
    fg = cams.max(axis=0) > threshold
    return np.where(fg, keys[best], 0).astype(np.uint8)


def normalized_cam_image(cams: np.ndarray, keys: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Max over the image's classes of max-normalised CAMs, resized to ``size``: (H, W) in [0, 1]."""
    if len(keys) == 0:
        return np.zeros(size, dtype=np.float32)
    planes = torch.from_numpy(np.maximum(cams[keys - 1], 0))[None]
    planes = F.interpolate(planes, size=size, mode="bilinear", align_corners=False)[0].numpy()
    peak = planes.reshape(len(keys), -1).max(axis=1)[:, None, None]
    return (planes / np.maximum(peak, 1e-5)).max(axis=0)
