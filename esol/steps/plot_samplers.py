"""Pictures of the learned samplers: where expansion and shrinkage move the sampling positions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from esol.data.layout import Dataset
from esol.data.loaders import normalize
from esol.inference.cams import normalized_cam_image
from esol.infra.config import Params
from esol.infra.io import atomic_dir
from esol.training.classifier import load_model

log = logging.getLogger("esol.plot_samplers")

OUTPUTS = ("out_dir",)


def sampling_arrows(offset: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Arrow origins (cell centres) and mean displacement of the 9 taps, in image pixels.

    ``offset``: (18, h, w) in feature cells, laid out as (dy, dx) per kernel tap.
    """
    _, h, w = offset.shape
    stride_y, stride_x = image_size[0] / h, image_size[1] / w
    pairs = offset.reshape(9, 2, h, w).mean(axis=0)
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs + 0.5) * stride_x, (ys + 0.5) * stride_y, pairs[1] * stride_x, pairs[0] * stride_y


def run(params: Params, *, data: Path, model: Path, out_dir: Path, count: int = 4) -> dict:
    """Draw, for the first COUNT images of the ``train`` split, the expansion (off1) and shrinkage
    (off2) sampling displacements of MODEL as arrows, and its CAM; one PNG per image in OUT_DIR."""
    from esol.reporting.plots import pyplot

    plt = pyplot()
    dataset = Dataset(data)
    net = load_model(params, dataset, model).eval()
    ids = dataset.ids("train")[:count]
    magnitudes = {}
    with atomic_dir(out_dir) as partial:
        for image_id in ids:
            image = dataset.image(image_id)
            labels = np.asarray(dataset.labels(image_id), dtype=np.int64)
            with torch.no_grad():
                out = net(normalize(image)[None])
            cam = normalized_cam_image(out.cams[0].numpy(), labels, image.shape[:2])
            fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
            for ax, (title, offset, colour) in zip(
                axes[:2],
                (
                    ("expansion sampler (offset 1)", out.offset1, "orange"),
                    ("shrinkage sampler (offset 2)", out.offset2, "cyan"),
                ),
                strict=True,
            ):
                x, y, u, v = sampling_arrows(offset[0].numpy(), image.shape[:2])
                ax.imshow(image)
                ax.quiver(x, y, u, v, color=colour, angles="xy", scale_units="xy", scale=1, width=0.006)
                mean_px = float(np.hypot(u, v).mean())
                ax.set_title(f"{title}\nmean shift {mean_px:.2f} px")
                magnitudes.setdefault(title.split()[0], []).append(mean_px)
            axes[2].imshow(image)
            axes[2].imshow(cam, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[2].set_title(f"CAM ({', '.join(dataset.classes[k] for k in labels)})")
            for ax in axes:
                ax.axis("off")
            fig.tight_layout()
            fig.savefig(partial / f"{image_id}.png", dpi=90)
            plt.close(fig)
    summary = {name: round(float(np.mean(values)), 3) for name, values in magnitudes.items()}
    log.info("mean sampling shift (pixels): %s", summary)
    return summary
