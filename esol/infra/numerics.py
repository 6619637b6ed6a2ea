"""Guards against NaN and infinity: a diverging run stops with a clear message instead of
writing a NaN model (or crashing inside a kernel that was handed NaN offsets)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module before the GPU lease: torch only where it is used
    import torch


class NonFiniteError(RuntimeError):
    """A tensor that must be finite holds NaN or infinity."""


class TrainingDiverged(RuntimeError):
    """A training loss (or a tensor the step depends on) became NaN or infinite; no model is written."""


def require_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """``tensor`` itself, or :class:`NonFiniteError` naming ``what`` (one host sync on GPU)."""
    import torch

    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{what}: {bad} of {tensor.numel()} values are NaN or infinite")
    return tensor
