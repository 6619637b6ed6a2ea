"""Device, precision, determinism and logging set-up shared by every step."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from esol import distributed
from esol.config import RuntimeConfig
from esol.logs import setup_logging  # noqa: F401  (re-exported: it used to live here)

log = logging.getLogger("esol")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_runtime(cfg: RuntimeConfig, seed: int) -> Runtime:
    """Pick the device, precision and memory format from ``runtime`` params; seed everything."""
    seed_everything(seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is visible")
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and cuda else "cpu")
    if device.type == "cuda" and distributed.current().world > 1:  # one device per launched process
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu":
        log.info(
            "running on CPU (%d threads)%s", torch.get_num_threads(), "" if cfg.device == "cpu" else ": no GPU visible"
        )
    else:
        log.info(
            "running on %s (CUDA_VISIBLE_DEVICES=%s)",
            torch.cuda.get_device_name(device),
            os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        )
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    if cfg.amp == "auto":
        amp = torch.bfloat16 if device.type == "cuda" else None
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    return Runtime(device=device, amp_dtype=amp, channels_last=channels_last)
