"""Dense CRF (pydensecrf): CAM seeds into pseudo labels (IRN style); segmentation post-processing (deeplab-pytorch)."""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from esol.infra.config import EvalSegConfig, RefineCrfConfig
from esol.infra.io import IGNORE_LABEL


def dense_crf(
    image: np.ndarray, n_labels: int, gaussian: tuple[float, float], bilateral: tuple[float, float, float]
) -> dcrf.DenseCRF2D:
    """A dense CRF over ``image`` with its pairwise terms, the unary still to set:
    ``gaussian`` = (sxy, compat), ``bilateral`` = (sxy, srgb, compat)."""
    h, w = image.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.addPairwiseGaussian(sxy=gaussian[0], compat=gaussian[1])
    crf.addPairwiseBilateral(
        sxy=bilateral[0], srgb=bilateral[1], rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=bilateral[2]
    )
    return crf


def crf_label_inference(image: np.ndarray, labels: np.ndarray, n_labels: int, cfg: RefineCrfConfig) -> np.ndarray:
    """Refine a label map (values < n_labels) with a dense CRF over ``image``; returns labels."""
    return crf_label_inference_many(image, [labels], n_labels, cfg)[0]


def crf_label_inference_many(
    image: np.ndarray, label_maps: list[np.ndarray], n_labels: int, cfg: RefineCrfConfig
) -> list[np.ndarray]:
    """:func:`crf_label_inference` of several label maps over one image.

    The pairwise terms depend on the image only: they (and the bilateral term's permutohedral
    lattice, the costly part of building a CRF) are built once, and each map swaps in its own
    unary. Inference starts afresh from the unary each time, so every result is the one a
    CRF of its own would give, bit for bit.
    """
    h, w = label_maps[0].shape
    gaussian = (cfg.gaussian_sxy, cfg.gaussian_compat)
    crf = dense_crf(image, n_labels, gaussian, (cfg.bilateral_sxy, cfg.bilateral_srgb, cfg.bilateral_compat))
    refined = []
    for labels in label_maps:
        unary = unary_from_labels(labels, n_labels, gt_prob=cfg.gt_prob, zero_unsure=False)
        crf.setUnaryEnergy(np.ascontiguousarray(unary))
        q = np.asarray(crf.inference(cfg.iterations), dtype=np.float32)
        refined.append(q.reshape(n_labels, h, w).argmax(axis=0))
    return refined


def pseudo_label(image: np.ndarray, keys: np.ndarray, cams: np.ndarray, cfg: RefineCrfConfig) -> np.ndarray:
    """Confident foreground (high background score) and background (low score), CRF-refined each.

    Pixels that are foreground in the first map keep its class; pixels background in both are
    background; the rest (foreground only under the permissive threshold) are 255 = uncertain.
    """
    keys_padded = np.concatenate([[0], keys]).astype(np.uint8)  # CRF label i <-> class keys_padded[i]
    n = len(keys_padded)
    if n == 1:
        fg_conf = bg_conf = np.zeros(cams.shape[1:], dtype=np.uint8)
    else:
        # seed_labels at both thresholds, in CRF labels: argmax and max computed once for the two.
        to_local = np.zeros(256, dtype=np.int64)
        to_local[keys_padded] = np.arange(n)
        best, peak = to_local[keys][cams.argmax(axis=0)], cams.max(axis=0)
        seeds = [np.where(peak > t, best, 0) for t in (cfg.fg_threshold, cfg.bg_threshold)]
        fg_conf, bg_conf = (keys_padded[r] for r in crf_label_inference_many(image, seeds, n, cfg))
    label = fg_conf.copy()
    label[fg_conf == 0] = IGNORE_LABEL
    label[(fg_conf == 0) & (bg_conf == 0)] = 0
    return label.astype(np.uint8)


def crf_from_probs(image: np.ndarray, probs: np.ndarray, cfg: EvalSegConfig) -> np.ndarray:
    """Dense-CRF post-processing of a segmentation net's class probabilities (K, H, W) over
    ``image``, as deeplab-pytorch does at test time (softmax unary; Gaussian kernel
    ``crf_pos_w``/``crf_pos_xy_std``, bilateral ``crf_bi_w``/``crf_bi_xy_std``/``crf_bi_rgb_std``);
    returns the (H, W) uint8 label map."""
    k, h, w = probs.shape
    crf = dense_crf(
        image, k, (cfg.crf_pos_xy_std, cfg.crf_pos_w), (cfg.crf_bi_xy_std, cfg.crf_bi_rgb_std, cfg.crf_bi_w)
    )
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.asarray(probs, dtype=np.float32))))
    q = np.asarray(crf.inference(cfg.crf_iterations), dtype=np.float32)
    return q.reshape(k, h, w).argmax(axis=0).astype(np.uint8)
