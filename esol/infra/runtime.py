"""Device, precision, determinism and logging set-up shared by every step."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from esol.infra import distributed
from esol.infra.config import RuntimeConfig
from esol.infra.logs import setup_logging  # noqa: F401  (re-exported: it used to live here)

log = logging.getLogger("esol")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    deterministic: bool = True

    @property
    def loss_scaling(self) -> bool:
        """fp16 needs its loss scaled (a GradScaler) so that small gradients do not flush to zero."""
        return self.amp_dtype == torch.float16

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler for this runtime: active under fp16, a pass-through otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.loss_scaling)

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


def wants_determinism(setting: bool | str, device_type: str) -> bool:
    """``runtime.deterministic``: true, false, or auto (deterministic on CPU, where it costs
    nothing and keeps results bit-exact; fast kernels on a GPU)."""
    if setting == "auto":
        return device_type == "cpu"
    return bool(setting)


def apply_device_settings(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms or cudnn's autotuner; TF32 matmuls and convolutions on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe(runtime: Runtime) -> str:
    """The numeric settings a step runs with, for its log."""
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16 with loss scaling"}[runtime.amp_dtype]
    parts = ["deterministic algorithms" if runtime.deterministic else "fast (non-deterministic) algorithms"]
    if runtime.device.type == "cuda":
        parts.append("cudnn.benchmark " + ("off" if runtime.deterministic else "on"))
        parts.append("TF32 allowed")
    parts += [f"amp {amp}", f"channels_last {'on' if runtime.channels_last else 'off'}"]
    return ", ".join(parts)


def make_runtime(cfg: RuntimeConfig, seed: int) -> Runtime:
    """Pick the device, precision, memory format and determinism from ``runtime`` params; seed
    everything; log what was chosen."""
    seed_everything(seed)
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
    deterministic = wants_determinism(cfg.deterministic, device.type)
    apply_device_settings(device, deterministic)
    runtime = Runtime(device=device, amp_dtype=amp, channels_last=channels_last, deterministic=deterministic)
    log.info("numerics: %s (runtime.deterministic: %s)", describe(runtime), cfg.deterministic)
    return runtime
