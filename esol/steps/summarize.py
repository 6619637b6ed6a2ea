"""The final tables: the ablation across variants and the contract metrics files."""

from __future__ import annotations

import logging
from pathlib import Path

from esol.evaluation.not_scored import NOT_SCORED, is_scored
from esol.infra.config import Params
from esol.infra.io import InputError, atomic_path, read_json, write_json
from esol.reporting.ablation import ablation_table
from esol.variants import FINAL_VARIANT

log = logging.getLogger("esol.summarize")

OUTPUTS = ("ablation", "final_seeds", "final_pseudo_labels", "final_segmentation")


def run(
    params: Params,
    *,
    seeds: list[Path],
    pseudo_labels: list[Path],
    segmentation: list[Path],
    ablation: Path,
    final_seeds: Path,
    final_pseudo_labels: Path,
    final_segmentation: Path,
) -> dict:
    """Collect per-variant SEEDS, PSEUDO_LABELS and SEGMENTATION metrics into ABLATION (CSV); copy
    the final variant's (esol) files to FINAL_SEEDS, FINAL_PSEUDO_LABELS and FINAL_SEGMENTATION;
    print the headline table."""
    table = ablation_table(seeds, pseudo_labels, segmentation)
    with atomic_path(ablation) as tmp:
        table.to_csv(tmp, index=False)
    final = [p for p in seeds if read_json(p)["variant"] == FINAL_VARIANT]
    final_pl = [p for p in pseudo_labels if read_json(p)["variant"] == FINAL_VARIANT]
    write_json(final_seeds, read_json(final[0]))
    write_json(final_pseudo_labels, read_json(final_pl[0]))
    final_seg = [p for p in segmentation if read_json(p)["variant"] == FINAL_VARIANT]
    if not final_seg:
        raise InputError(f"--segmentation: no metrics file of the final variant {FINAL_VARIANT} among {segmentation}")
    seg = read_json(final_seg[0])
    write_json(final_segmentation, seg)
    log.info("ablation:\n%s", table.to_string(index=False))
    if is_scored(seg):
        log.info("segmentation val mIoU %.2f (%s)", seg["miou"], FINAL_VARIANT)
    else:
        log.info("segmentation val: %s (%s)", NOT_SCORED, seg.get("reason", ""))
    return {"variants": table["variant"].tolist()}
