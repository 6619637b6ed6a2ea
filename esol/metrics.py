"""Segmentation scores from a confusion matrix (ground-truth 255 ignored)."""

from __future__ import annotations

import numpy as np

from esol.io import IGNORE_LABEL


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 matrix, rows = ground truth, columns = prediction."""
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    gt = gt.reshape(-1)
    pred = pred.reshape(-1)
    valid = gt != IGNORE_LABEL
    if not valid.all():
        gt, pred = gt[valid], pred[valid]
    index = num_classes * gt.astype(np.int64) + pred.astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(conf: np.ndarray, class_names: list[str] | None = None) -> dict:
    """mIoU, foreground precision and recall (percent) and per-class IoU.

    IoU_c = TP / (TP + FP + FN), averaged over classes that occur in ground truth or prediction.
    Precision and recall pool the foreground classes: a pixel counts as a true positive only
    when its class is right, so they measure localisation *and* labelling.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    fp = conf.sum(axis=0) - tp
    fn = conf.sum(axis=1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    fg_tp = tp[1:].sum()
    precision = fg_tp / max(tp[1:].sum() + fp[1:].sum(), 1)
    recall = fg_tp / max(tp[1:].sum() + fn[1:].sum(), 1)
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        "miou": round(float(np.nanmean(iou)) * 100, 3) if np.isfinite(iou).any() else 0.0,
        "precision": round(float(precision) * 100, 3),
        "recall": round(float(recall) * 100, 3),
        "pixel_accuracy": round(float(tp.sum() / max(conf.sum(), 1)) * 100, 3),
        "per_class": {
            name: (None if np.isnan(v) else round(float(v) * 100, 3)) for name, v in zip(names, iou, strict=True)
        },
    }
