"""Stage 0: train the backbone, W1 and the classifier with offsets held at zero (plain CAM)."""

from __future__ import annotations

from pathlib import Path

from esol.infra.config import Params
from esol.training.classifier import train_stage

OUTPUTS = ("out_model", "metrics", "live_dir", "checkpoint_dir")


def run(params: Params, *, data: Path, out_model: Path, metrics: Path, live_dir: Path, checkpoint_dir: Path) -> dict:
    """Stage 0: train the backbone, W1 and the classifier with offsets held at zero (plain CAM).

    Reads DATA (train_aug split); writes OUT_MODEL, METRICS (final epoch's losses), training
    curves to LIVE_DIR (dvclive) and a resumable checkpoint per epoch to CHECKPOINT_DIR.
    """
    return train_stage(
        "train_cam",
        params,
        data_dir=data,
        init_model=None,
        out_model=out_model,
        metrics=metrics,
        live_dir=live_dir,
        checkpoint_dir=checkpoint_dir,
    )
