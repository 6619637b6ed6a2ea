"""File handling shared by every step: atomic writes, checked reads, safe checkpoints.

Every artifact is written under a temporary name in the destination directory and renamed into
place, so a step killed at any moment leaves either nothing or a complete file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IGNORE_LABEL = 255


class InputError(ValueError):
    """An input file is missing, unreadable or inconsistent; the message names it."""


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: (n, 3) uint8, label 255 is the cream ignore colour."""
    return _voc_palette(n).copy()


@functools.cache
def _voc_palette(n: int) -> np.ndarray:
    palette = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        c, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[label] = (r, g, b)
    return palette


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


FINGERPRINT_FILE = ".fingerprint"


@contextlib.contextmanager
def atomic_dir(path: str | Path, fingerprint: str = "") -> Iterator[Path]:
    """Build a directory under ``<path>.partial`` and rename it onto ``path`` on success.

    The partial directory survives a crash on purpose: steps that produce one file per image
    resume from it and skip what is already there. ``fingerprint`` identifies the inputs and
    settings; a partial directory left by a run with another fingerprint is discarded.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    stamp = partial / FINGERPRINT_FILE
    if partial.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    yield partial
    stamp.unlink()
    if path.exists():
        shutil.rmtree(path)
    os.replace(partial, path)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an RGB image as (H, W, 3) uint8; a missing or corrupt file raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: cannot decode image ({exc})") from exc


def read_label_png(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read a (palette) PNG label map as (H, W) uint8; ids must be < num_classes or 255."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: mask not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise InputError(f"{path}: mask must be a palette or greyscale PNG, got mode {img.mode}")
            label = np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: cannot decode mask ({exc})") from exc
    if num_classes is not None:
        bad = np.unique(label[(label >= num_classes) & (label != IGNORE_LABEL)])
        if bad.size:
            raise InputError(
                f"{path}: mask holds class id(s) {bad.tolist()} outside 0..{num_classes - 1} (255 = ignore)"
            )
    return label


@functools.cache
def _palette_list() -> tuple[int, ...]:
    """The VOC palette as PIL's ``putpalette`` takes it, built once (a label PNG is written per image)."""
    return tuple(_voc_palette(256).reshape(-1).tolist())


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write a (H, W) uint8 label map as a VOC-palette PNG, atomically."""
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(_palette_list())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_jpeg(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=quality)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
