"""Seed evaluation: score thresholded CAMs against ground truth over a background-score sweep."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from esol.data.layout import Dataset
from esol.evaluation.metrics import confusion, scores
from esol.evaluation.not_scored import not_scored
from esol.evaluation.seed_errors import REGION_NAMES, SeedErrors
from esol.inference.cams import load_cam
from esol.infra.config import Params
from esol.infra.io import read_label_png, write_json, write_text
from esol.infra.progress import tqdm

log = logging.getLogger("esol.eval_seeds")

OUTPUTS = ("metrics", "curve")


def thresholds(start: float, stop: float, step: float) -> list[float]:
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    return [round(start + i * step, 6) for i in range(count)]


def run(params: Params, *, data: Path, cams: Path, variant: str, metrics: Path, curve: Path) -> dict:
    """Score the CAMs in CAMS on the ``train`` split of DATA; write METRICS (JSON) and CURVE (CSV).

    The background score is swept over ``eval_seeds.sweep_*``; METRICS holds the scores at
    ``eval_seeds.threshold``, the best threshold and the whole curve, and at both thresholds
    where the errors lie (:mod:`esol.evaluation.seed_errors`). Only images with a mask are scored; when
    none has one (a folder dataset without masks), METRICS says "not scored" and CURVE is empty.
    """
    cfg = params.eval_seeds
    dataset = Dataset(data)
    header = "threshold,miou,precision,recall\n"
    ids = dataset.scored_ids("train")
    if not ids:
        result = not_scored("train", len(dataset.ids("train")), variant=variant, threshold=cfg.threshold)
        write_json(metrics, result)
        write_text(curve, header)
        log.info("%s seeds: not scored (no image of the train split has a mask)", variant)
        return result
    k = dataset.num_classes
    sweep = sorted(set(thresholds(cfg.sweep_start, cfg.sweep_stop, cfg.sweep_step)) | {cfg.threshold})
    confs = np.zeros((len(sweep), k, k), dtype=np.int64)
    region_dir = dataset.root / "Regions"  # synthetic data only: where the failure modes live
    region_sums, region_counts = np.zeros(4), np.zeros(4)
    errors = SeedErrors(sweep)
    for image_id in tqdm(ids, desc=f"seeds {variant}", mininterval=5):
        keys, cam = load_cam(cams / f"{image_id}.npz")
        gt = dataset.mask(image_id)
        if cam.shape[1:] != gt.shape:
            raise ValueError(f"{cams / image_id}.npz: CAM size {cam.shape[1:]} differs from mask {gt.shape}")
        if len(keys):
            best, peak = keys[cam.argmax(axis=0)], cam.max(axis=0)
        else:
            best, peak = np.zeros_like(gt), np.zeros(gt.shape, np.float32)
        regions = None
        if region_dir.is_dir():
            regions = read_label_png(region_dir / f"{image_id}.png")
            region_sums += np.bincount(regions.ravel(), weights=peak.ravel(), minlength=4)[:4]
            region_counts += np.bincount(regions.ravel(), minlength=4)[:4]
        errors.add(gt, best, peak, regions)
        for i, t in enumerate(sweep):
            confs[i] += confusion(gt, np.where(peak > t, best, 0), k)
    curve_rows = [
        {"threshold": t, **{m: v for m, v in scores(c).items() if m != "per_class"}}
        for t, c in zip(sweep, confs, strict=True)
    ]
    best_row = max(curve_rows, key=lambda r: r["miou"])
    at = scores(confs[sweep.index(cfg.threshold)], dataset.classes)
    best_scores = scores(confs[sweep.index(best_row["threshold"])], dataset.classes)
    result = {
        "variant": variant,
        **at,
        "threshold": cfg.threshold,
        "best_threshold": best_row["threshold"],
        "best": {m: best_scores[m] for m in ("miou", "precision", "recall")},
        "curve": curve_rows,
        "errors": {"threshold": errors.at(cfg.threshold), "best": errors.at(best_row["threshold"])},
    }
    if region_counts.sum():
        result["mean_cam_by_region"] = {
            name: round(float(region_sums[i] / max(region_counts[i], 1)), 4) for i, name in enumerate(REGION_NAMES)
        }
    write_json(metrics, result)
    write_text(
        curve, header + "".join(f"{r['threshold']},{r['miou']},{r['precision']},{r['recall']}\n" for r in curve_rows)
    )
    log.info(
        "%s seeds: mIoU %.2f at t=%.2f; best %.2f at t=%.2f",
        variant,
        at["miou"],
        cfg.threshold,
        best_row["miou"],
        best_row["threshold"],
    )
    return result
