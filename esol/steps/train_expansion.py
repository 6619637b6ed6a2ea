"""Stage 1: train the expansion sampler (off1, gradient reversed) against the classifier."""

from __future__ import annotations

from pathlib import Path

from esol.infra.config import Params
from esol.training.classifier import train_stage

OUTPUTS = ("out_model", "metrics", "live_dir", "checkpoint_dir")


def run(
    params: Params,
    *,
    data: Path,
    init_model: Path,
    out_model: Path,
    metrics: Path,
    live_dir: Path,
    checkpoint_dir: Path,
) -> dict:
    """Stage 1: train the expansion sampler (off1, gradient reversed) against the classifier.

    Starts from INIT_MODEL; reads DATA (train_aug split); writes OUT_MODEL, METRICS, training curves
    to LIVE_DIR (dvclive) and a resumable checkpoint per epoch to CHECKPOINT_DIR.
    """
    return train_stage(
        "train_expansion",
        params,
        data_dir=data,
        init_model=init_model,
        out_model=out_model,
        metrics=metrics,
        live_dir=live_dir,
        checkpoint_dir=checkpoint_dir,
    )
