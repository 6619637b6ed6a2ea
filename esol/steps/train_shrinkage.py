"""Stage 2: train the shrinkage sampler (off2) and the classifier with L_cls + area loss."""

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
    """Stage 2: train the shrinkage sampler (off2) and the classifier with L_cls + area loss.

    Starts from INIT_MODEL; reads DATA (train_aug split); writes OUT_MODEL, METRICS, training curves
    to LIVE_DIR (dvclive) and a resumable checkpoint per epoch to CHECKPOINT_DIR.
    """
    return train_stage(
        "train_shrinkage",
        params,
        data_dir=data,
        init_model=init_model,
        out_model=out_model,
        metrics=metrics,
        live_dir=live_dir,
        checkpoint_dir=checkpoint_dir,
    )
