"""The metrics file of a scoring step that had no ground truth to score against.

A folder dataset (:mod:`esol.data.folder`) may come without masks, or with masks on some images
only: a scoring step then writes ``{"scored": false, "status": "not scored", ...}`` in place of
its scores, and the steps that read metrics (summarize, make_figures, show) say so instead of
failing. Scored files carry no ``scored`` key: :func:`is_scored` reads its absence as true.
"""

from __future__ import annotations

from typing import Any

NOT_SCORED = "not scored"


def not_scored(split: str, images: int, **fields: Any) -> dict[str, Any]:
    """The metrics of a step whose ``split`` (``images`` images) has no image with a mask."""
    return {
        **fields,
        "scored": False,
        "status": NOT_SCORED,
        "reason": f"no ground-truth mask among the {images} image(s) of the {split} split",
        "split": split,
        "images": images,
    }


def is_scored(metrics: dict[str, Any]) -> bool:
    """Whether a metrics file holds scores (files from before this key existed always do)."""
    return bool(metrics.get("scored", True))
