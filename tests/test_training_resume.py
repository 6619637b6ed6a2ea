"""A training run resumed on another set-up (thread count, GPU model, process count) says so."""

from __future__ import annotations

import logging

import torch

from esol.infra.config import params_from_dict
from esol.training import checkpoint
from esol.training.classifier import train_stage

from .conftest import smoke_params_dict


def test_resuming_on_another_thread_count_warns_and_the_checkpoint_remembers(smoke_dataset, tmp_path, caplog):
    raw = smoke_params_dict()
    raw["train_cam"]["epochs"] = 2
    params = params_from_dict(raw)

    def train():
        train_stage(
            "train_cam",
            params,
            data_dir=smoke_dataset.root,
            init_model=None,
            out_model=tmp_path / "cam.pt",
            metrics=tmp_path / "cam.json",
            live_dir=tmp_path / "live",
            checkpoint_dir=tmp_path / "checkpoints",
        )

    last = tmp_path / "checkpoints" / "last.pt"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with caplog.at_level(logging.INFO, logger="esol.training.loop"):
            train()
            train()  # every epoch done: resumes on the same set-up, trains nothing
        assert "resuming after epoch 2" in caplog.text
        assert "not bit-identical" not in caplog.text
        state = checkpoint.safe_load(last)
        state["epoch"] = 0  # as if killed after the first epoch
        checkpoint.save(last, state)
        caplog.clear()
        torch.set_num_threads(2)
        with caplog.at_level(logging.INFO, logger="esol.training.loop"):
            train()
    finally:
        torch.set_num_threads(threads)
    assert "resuming after epoch 1" in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "CPU with 1 threads and CPU with 2 threads" in warnings[0].getMessage()
    assert checkpoint.safe_load(last)["computed_on"] == ["CPU with 1 threads", "CPU with 2 threads"]
