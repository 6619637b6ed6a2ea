"""Plotting helpers shared by the figure steps and the research scripts: matplotlib without a
display, atomic PNG writes, label maps in the VOC palette."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esol.infra.io import IGNORE_LABEL, atomic_path, voc_palette


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def colorize(label: np.ndarray) -> np.ndarray:
    """A label map as an RGB image in the VOC palette (255, uncertain or ignored, in cream)."""
    return voc_palette()[label]


def class_legend(ax, classes: list[str], present: set[int]) -> None:
    """Legend patches, in the VOC palette, for the class ids in ``present``."""
    from matplotlib.patches import Patch

    palette = voc_palette() / 255.0
    names = {**dict(enumerate(classes)), IGNORE_LABEL: "uncertain / ignored"}
    handles = [
        Patch(facecolor=palette[k], edgecolor="black", linewidth=0.5, label=names[k])
        for k in sorted(present)
        if k in names
    ]
    ax.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize=8)
    ax.axis("off")


def load_cam_image(cam_dir: Path, image_id: str) -> tuple[np.ndarray, list[int]]:
    """The image's CAM heat map (max over its classes, [0, 1]) and its class ids."""
    from esol.inference.cams import load_cam

    keys, cams = load_cam(cam_dir / f"{image_id}.npz")
    heat = cams.max(axis=0) if len(keys) else np.zeros(cams.shape[1:], np.float32)
    return heat, keys.tolist()
