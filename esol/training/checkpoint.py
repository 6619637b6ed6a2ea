"""Checkpoints: safe loading, architecture checks, and per-epoch resume state."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from esol.infra.io import InputError, atomic_path


def safe_load(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only.

    A file carrying pickled objects (which could run code on load) is refused with InputError.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path}: refused to load: the file holds pickled objects beyond tensors "
            f"(weights_only=True): {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable torch checkpoint ({exc})") from exc


def save(path: str | Path, obj: Any) -> None:
    """Save ``obj`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def fingerprint(*sections: Any) -> str:
    """A short hash of config sections: a checkpoint only resumes the run it belongs to."""
    text = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path | None) -> str:
    """Short sha256 of a file's bytes ("" for None)."""
    if path is None:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def labels_digest(labels: str | Path) -> str:
    """Short sha256 over a directory's label PNGs (names and bytes): a checkpoint resumes only the
    run that trained on these very labels (new labels after an upstream change: start afresh)."""
    digest = hashlib.sha256()
    for path in sorted(Path(labels).glob("*.png")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_model_state(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a model file written by a training step into ``model``; returns its metadata.

    Refuses files of a different architecture, naming the file and the first mismatches.
    """
    blob = safe_load(path)
    if not isinstance(blob, dict) or "model" not in blob:
        raise InputError(f"{path}: not an esol model file (no 'model' entry)")
    state = blob["model"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            k = mismatched[0]
            details.append(
                f"{len(mismatched)} shape mismatch(es), e.g. {k}: "
                f"file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            )
        if missing:
            details.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise InputError(f"{path}: checkpoint is from a different architecture: " + "; ".join(details))
    model.load_state_dict(state)
    return blob.get("meta", {})
