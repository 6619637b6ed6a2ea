"""The ablation table: each variant's seed scores at the configured and the best threshold, at
matched operating points of the precision-recall curves, where its errors lie, and its
pseudo-label mIoU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from esol.evaluation.not_scored import NOT_SCORED, is_scored
from esol.evaluation.seed_errors import fp_share_within
from esol.infra.io import read_json
from esol.variants import NAMES


def value_at(curve: list[dict], along: str, at: float, value: str) -> float:
    """Read VALUE off a threshold sweep where ALONG equals AT, interpolating linearly between the
    sweep's points (e.g. precision at a given recall); clamped to the sweep's ends."""
    points = sorted((point[along], point[value]) for point in curve)
    xs, ys = zip(*points, strict=True)
    return round(float(np.interp(at, xs, ys)), 3)


def error_columns(seeds: dict) -> dict:
    """Where the errors lie (:mod:`esol.evaluation.seed_errors`): at the configured and the best threshold,
    the share of object pixels given a wrong class and the share missed (below the threshold); at
    the best threshold also the recall on the class part and the shared body and the
    false-positive rate on the class context (synthetic data only), and the share of false
    positives within 8 px of an object."""
    errors = seeds.get("errors", {})
    columns = {}
    for prefix, view in (("seed_", "threshold"), ("best_", "best")):
        for key in ("wrong_class_rate", "missed_rate"):
            if key in errors.get(view, {}):
                columns[f"{prefix}{key}"] = errors[view][key]
    best = errors.get("best")
    if best is not None:
        columns.update({f"best_{key}": best.get(key) for key in ("part_recall", "body_recall", "context_fp_rate")})
        columns["best_fp_share_within_8px"] = fp_share_within(best["fp_share_by_distance"], 8)
    return columns


def segmentation_columns(seg: dict | None) -> dict:
    """The segmentation net's val scores (configured inference), and its plain single-scale and
    CRF-post-processed mIoU where eval_seg computed them; None for a variant without a net."""
    seg = seg or {}
    columns = {f"seg_{key}": seg.get(key) for key in ("miou", "precision", "recall")}
    columns["seg_miou_single_scale"] = seg.get("miou_single_scale")
    columns["seg_miou_crf"] = seg.get("miou_crf")
    return columns


def refinement_columns(pseudo: dict[str, dict], variant: str) -> dict:
    """Pseudo-mask precision and recall of the CRF step, and mIoU / precision / recall of IRN's
    masks (metrics of variant ``<variant>_irn``), where they were scored."""
    columns = {}
    if variant in pseudo and is_scored(pseudo[variant]):
        columns.update({f"pseudo_label_{m}": pseudo[variant].get(m) for m in ("precision", "recall")})
    irn = pseudo.get(f"{variant}_irn")
    if irn is not None and is_scored(irn):
        columns.update({f"irn_mask_{m}": irn.get(m) for m in ("miou", "precision", "recall")})
    return columns


def ablation_table(seed_files: list[Path], pseudo_files: list[Path], seg_files: Sequence[Path] = ()) -> pd.DataFrame:
    """One row per variant: seed scores at the configured and the best threshold, pseudo-label
    mIoU, and the scores of the segmentation net trained on the variant's pseudo labels.

    Two matched operating points compare the variants' precision-recall curves rather than single
    thresholds (each variant's best threshold trades precision for recall differently): recall
    where a variant's precision equals cam's at cam's best threshold, and precision where its
    recall equals expansion's at expansion's best threshold.
    A variant whose seeds were not scored (no masks) gets a row with ``status`` "not scored".
    """
    rows = []
    pseudo = {read_json(p)["variant"]: read_json(p) for p in pseudo_files}
    segmentation = {read_json(p)["variant"]: read_json(p) for p in seg_files}
    all_seeds = {m["variant"]: m for m in map(read_json, seed_files) if is_scored(m)}
    reference_precision = all_seeds["cam"]["best"]["precision"] if "cam" in all_seeds else None
    reference_recall = all_seeds["expansion"]["best"]["recall"] if "expansion" in all_seeds else None
    for path in seed_files:
        seeds = read_json(path)
        variant = seeds["variant"]
        if not is_scored(seeds):
            rows.append({"variant": variant, "status": NOT_SCORED})
            continue
        matched = {}
        if reference_precision is not None:
            matched["recall_at_cam_precision"] = value_at(seeds["curve"], "precision", reference_precision, "recall")
        if reference_recall is not None:
            matched["precision_at_expansion_recall"] = value_at(seeds["curve"], "recall", reference_recall, "precision")
        rows.append(
            {
                "variant": variant,
                "seed_miou": seeds["miou"],
                "seed_precision": seeds["precision"],
                "seed_recall": seeds["recall"],
                "threshold": seeds["threshold"],
                "best_threshold": seeds["best_threshold"],
                "best_seed_miou": seeds["best"]["miou"],
                "best_seed_precision": seeds["best"]["precision"],
                "best_seed_recall": seeds["best"]["recall"],
                **matched,
                **error_columns(seeds),
                "pseudo_label_miou": pseudo.get(variant, {}).get("miou"),
                **refinement_columns(pseudo, variant),
                **(segmentation_columns(segmentation.get(variant)) if segmentation else {}),
            }
        )
    order = {v: i for i, v in enumerate(NAMES)}
    return pd.DataFrame(rows).sort_values("variant", key=lambda s: s.map(order)).reset_index(drop=True)
