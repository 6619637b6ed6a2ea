"""Segmentation scores from a confusion matrix (ground-truth 255 ignored)."""

from __future__ import annotations

import numpy as np

from esol.infra.io import IGNORE_LABEL


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 matrix, rows = ground truth, columns = prediction.

    One ``np.bincount`` over ``k * gt + pred``, computed in uint16 for uint8 ground truth (the
    narrowest type that holds it, and the fastest to count). Ignored pixels (gt 255) are not
    masked out first (a copy of both maps): they land in a row of their own, dropped. Class ids
    outside 0..k-1 (or 255 in the ground truth) raise ValueError.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    k = num_classes
    gt = gt.reshape(-1)
    pred = pred.reshape(-1)
    if pred.size and (pred.max() >= k or (pred.dtype.kind != "u" and pred.min() < 0)):
        bad = np.unique(pred[(pred < 0) | (pred >= k)])
        raise ValueError(f"prediction holds class id(s) {bad.tolist()} outside 0..{k - 1}")
    index = gt.astype(np.uint16 if gt.dtype == np.uint8 and k <= 256 else np.int64)  # k*255 + k-1 < 2**16
    index *= k
    np.add(index, pred, out=index, casting="unsafe")  # pred is in 0..k-1: no value changes
    counts = np.bincount(index, minlength=k * k)
    if counts.size > k * k and (counts[k * k : IGNORE_LABEL * k].any() or counts[(IGNORE_LABEL + 1) * k :].any()):
        bad = np.unique(gt[(gt >= k) & (gt != IGNORE_LABEL)])
        raise ValueError(f"ground truth holds class id(s) {bad.tolist()} outside 0..{k - 1} (255 = ignore)")
    return counts[: k * k].reshape(k, k)


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
