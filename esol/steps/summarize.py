"""The final tables: the ablation across variants and the contract metrics files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from esol.config import Params
from esol.io import atomic_path, read_json, write_json
from esol.seed_errors import fp_share_within

log = logging.getLogger("esol.summarize")

OUTPUTS = ("ablation", "final_seeds", "final_pseudo_labels")

VARIANTS = ("cam", "expansion", "shrinkage", "esol")
FINAL_VARIANT = "esol"


def value_at(curve: list[dict], along: str, at: float, value: str) -> float:
    """Read VALUE off a threshold sweep where ALONG equals AT, interpolating linearly between the
    sweep's points (e.g. precision at a given recall); clamped to the sweep's ends."""
    points = sorted((point[along], point[value]) for point in curve)
    xs, ys = zip(*points, strict=True)
    return round(float(np.interp(at, xs, ys)), 3)


def error_columns(seeds: dict) -> dict:
    """Where the errors lie (:mod:`esol.seed_errors`): at the configured and the best threshold,
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


def ablation_table(seed_files: list[Path], pseudo_files: list[Path]) -> pd.DataFrame:
    """One row per variant: seed scores at the configured and the best threshold, pseudo-label mIoU.

    Two matched operating points compare the variants' precision-recall curves rather than single
    thresholds (each variant's best threshold trades precision for recall differently): recall
    where a variant's precision equals cam's at cam's best threshold, and precision where its
    recall equals expansion's at expansion's best threshold.
    """
    rows = []
    pseudo = {read_json(p)["variant"]: read_json(p) for p in pseudo_files}
    all_seeds = {read_json(p)["variant"]: read_json(p) for p in seed_files}
    reference_precision = all_seeds["cam"]["best"]["precision"] if "cam" in all_seeds else None
    reference_recall = all_seeds["expansion"]["best"]["recall"] if "expansion" in all_seeds else None
    for path in seed_files:
        seeds = read_json(path)
        variant = seeds["variant"]
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
            }
        )
    order = {v: i for i, v in enumerate(VARIANTS)}
    return pd.DataFrame(rows).sort_values("variant", key=lambda s: s.map(order)).reset_index(drop=True)


def run(
    params: Params,
    *,
    seeds: list[Path],
    pseudo_labels: list[Path],
    segmentation: Path,
    ablation: Path,
    final_seeds: Path,
    final_pseudo_labels: Path,
) -> dict:
    """Collect per-variant SEEDS and PSEUDO_LABELS metrics into ABLATION (CSV); copy the final
    variant's (esol) files to FINAL_SEEDS and FINAL_PSEUDO_LABELS; print the headline table."""
    table = ablation_table(seeds, pseudo_labels)
    with atomic_path(ablation) as tmp:
        table.to_csv(tmp, index=False)
    final = [p for p in seeds if read_json(p)["variant"] == FINAL_VARIANT]
    final_pl = [p for p in pseudo_labels if read_json(p)["variant"] == FINAL_VARIANT]
    write_json(final_seeds, read_json(final[0]))
    write_json(final_pseudo_labels, read_json(final_pl[0]))
    seg = read_json(segmentation)
    log.info("ablation:\n%s", table.to_string(index=False))
    log.info("segmentation val mIoU %.2f", seg["miou"])
    return {"variants": table["variant"].tolist()}
