"""The two refinements side by side, per sample image: CAM | IR labels | CRF mask | IRN mask."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from esol.data.layout import Dataset
from esol.infra.config import Params
from esol.infra.io import IGNORE_LABEL, InputError, atomic_dir, read_label_png

log = logging.getLogger("esol.plot_refinement")

OUTPUTS = ("out_dir",)


def refinement_panels(
    dataset: Dataset, image_id: str, cam_dir: Path, ir_label_dir: Path, irn_mask_dir: Path
) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(title, image or label map, CAM heat map or None) per panel of one variant's row."""
    from esol.reporting.plots import load_cam_image

    heat, _ = load_cam_image(cam_dir, image_id)
    ir_labels = read_label_png(ir_label_dir / f"{image_id}.png", dataset.num_classes)
    irn_mask = read_label_png(irn_mask_dir / f"{image_id}.png", dataset.num_classes)
    name = cam_dir.name
    panels = [
        (f"CAM: {name}", dataset.image(image_id), heat),
        (f"IR labels: {name}", ir_labels, None),
        (f"CRF mask: {name}", np.where(ir_labels == IGNORE_LABEL, 0, ir_labels).astype(np.uint8), None),
        (f"IRN mask: {name}", irn_mask, None),
    ]
    if dataset.has_mask(image_id):  # a folder dataset's image may have none
        panels.append(("ground truth", dataset.mask(image_id), None))
    return panels


def run(
    params: Params,
    *,
    data: Path,
    cams: list[Path],
    ir_labels: list[Path],
    irn_masks: list[Path],
    out_dir: Path,
    count: int = 6,
) -> dict:
    """Draw, for the first COUNT images of the ``train`` split, one row per variant: its CAM, the
    CRF step's IR labels (uncertain pixels in cream), the CRF mask (uncertain as background, as
    scored) and IRN's mask, beside the ground truth; one PNG per image in OUT_DIR. CAMS, IR_LABELS
    and IRN_MASKS list one directory per variant, in the same order."""
    from esol.reporting.plots import class_legend, colorize, pyplot, save_png

    if not len(cams) == len(ir_labels) == len(irn_masks):
        raise InputError(f"plot_refinement: {len(cams)} CAM, {len(ir_labels)} IR-label and {len(irn_masks)} IRN dirs")
    plt = pyplot()
    dataset = Dataset(data)
    ids = dataset.ids("train")[:count]
    with atomic_dir(out_dir) as partial:
        for image_id in ids:
            rows = [
                refinement_panels(dataset, image_id, *dirs) for dirs in zip(cams, ir_labels, irn_masks, strict=True)
            ]
            present = {int(v) for row in rows for _, array, _ in row if array.ndim == 2 for v in np.unique(array)}
            n = len(rows[0])
            fig = plt.figure(figsize=(1.9 * n, 2.0 * len(rows) + 0.6))
            grid = fig.add_gridspec(len(rows) + 1, n, height_ratios=[1] * len(rows) + [0.15], hspace=0.2, wspace=0.04)
            for r, row in enumerate(rows):
                for c, (title, array, heat) in enumerate(row):
                    ax = fig.add_subplot(grid[r, c])
                    ax.imshow(colorize(array) if array.ndim == 2 else array, interpolation="nearest")
                    if heat is not None:
                        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
                    ax.set_title(title, fontsize=8)
                    ax.axis("off")
            class_legend(fig.add_subplot(grid[len(rows), :]), dataset.classes, present)
            fig.suptitle(f"{image_id}: CRF and IRN refinement", fontsize=9)
            save_png(fig, partial / f"{image_id}.png")
            plt.close(fig)
    log.info("%d refinement figures in %s", len(ids), out_dir)
    return {"samples": ids}
