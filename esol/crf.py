"""Dense CRF refinement (pydensecrf) of CAM seeds into pseudo labels, IRN style."""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels

from esol.cams import seed_labels
from esol.config import RefineCrfConfig
from esol.io import IGNORE_LABEL


def crf_label_inference(image: np.ndarray, labels: np.ndarray, n_labels: int, cfg: RefineCrfConfig) -> np.ndarray:
    """Refine a label map (values < n_labels) with a dense CRF over ``image``; returns labels."""
    h, w = labels.shape
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(
        np.ascontiguousarray(unary_from_labels(labels, n_labels, gt_prob=cfg.gt_prob, zero_unsure=False))
    )
    crf.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=cfg.bilateral_sxy,
        srgb=cfg.bilateral_srgb,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=cfg.bilateral_compat,
    )
    q = np.asarray(crf.inference(cfg.iterations), dtype=np.float32)
    return q.reshape(n_labels, h, w).argmax(axis=0)


def pseudo_label(image: np.ndarray, keys: np.ndarray, cams: np.ndarray, cfg: RefineCrfConfig) -> np.ndarray:
    """Confident foreground (high background score) and background (low score), CRF-refined each.

    Pixels that are foreground in the first map keep its class; pixels background in both are
    background; the rest (foreground only under the permissive threshold) are 255 = uncertain.
    """
    keys_padded = np.concatenate([[0], keys]).astype(np.uint8)  # CRF label i <-> class keys_padded[i]
    to_local = np.zeros(256, dtype=np.int64)
    to_local[keys_padded] = np.arange(len(keys_padded))
    n = len(keys_padded)

    def refined(threshold: float) -> np.ndarray:
        seeds = seed_labels(keys, cams, threshold)
        if n == 1:
            return np.zeros_like(seeds)
        return keys_padded[crf_label_inference(image, to_local[seeds], n, cfg)]

    fg_conf = refined(cfg.fg_threshold)
    bg_conf = refined(cfg.bg_threshold)
    label = fg_conf.copy()
    label[fg_conf == 0] = IGNORE_LABEL
    label[(fg_conf == 0) & (bg_conf == 0)] = 0
    return label.astype(np.uint8)
