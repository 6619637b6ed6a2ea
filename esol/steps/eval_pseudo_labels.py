"""Pseudo-label evaluation against ground truth (uncertain pixels scored as background)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from esol.data.layout import Dataset
from esol.evaluation.metrics import confusion, scores
from esol.evaluation.not_scored import not_scored
from esol.infra.config import Params
from esol.infra.io import IGNORE_LABEL, read_label_png, write_json
from esol.infra.progress import tqdm

log = logging.getLogger("esol.eval_pseudo_labels")

OUTPUTS = ("metrics",)


def run(params: Params, *, data: Path, labels: Path, variant: str, metrics: Path) -> dict:
    """Score the pseudo labels in LABELS on DATA's ``dataset.pseudo_label_split`` (``train`` or
    ``train_aug``); write METRICS (JSON).

    Uncertain pixels (255) count as background, the strict reading; their share is reported as
    ``uncertain_percent``, and ``*_certain`` scores ignore them. Only images with a mask are
    scored; when none has one, METRICS says "not scored".
    """
    dataset = Dataset(data)
    split = params.dataset.pseudo_label_split
    ids = dataset.scored_ids(split)
    if not ids:
        result = not_scored(split, len(dataset.ids(split)), variant=variant)
        write_json(metrics, result)
        log.info("%s pseudo labels: not scored (no image of the %s split has a mask)", variant, split)
        return result
    k = dataset.num_classes
    strict = np.zeros((k, k), dtype=np.int64)
    certain = np.zeros((k, k), dtype=np.int64)
    uncertain = total = 0
    for image_id in tqdm(ids, desc=f"pseudo labels {variant}", mininterval=5):
        pred = read_label_png(labels / f"{image_id}.png", k)
        gt = dataset.mask(image_id)
        unsure = pred == IGNORE_LABEL
        uncertain += int(unsure.sum())
        total += pred.size
        strict += confusion(gt, np.where(unsure, 0, pred), k)
        gt_certain = np.where(unsure, IGNORE_LABEL, gt)
        certain += confusion(gt_certain, np.where(unsure, 0, pred), k)
    result = {"variant": variant, "split": split, "scored_images": len(ids), **scores(strict, dataset.classes)}
    result["uncertain_percent"] = round(100 * uncertain / max(total, 1), 3)
    result.update({f"{m}_certain": v for m, v in scores(certain).items() if m in ("miou", "precision", "recall")})
    write_json(metrics, result)
    log.info(
        "%s pseudo labels on %s (%d images): mIoU %.2f (%.1f%% uncertain)",
        variant,
        split,
        len(ids),
        result["miou"],
        result["uncertain_percent"],
    )
    return result
