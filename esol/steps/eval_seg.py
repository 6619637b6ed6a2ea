"""Segmentation evaluation on the validation split's ground truth."""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from esol.data.layout import Dataset
from esol.data.loaders import InferenceSet, collate_inference
from esol.evaluation.metrics import confusion, scores
from esol.evaluation.not_scored import not_scored
from esol.infra.config import EvalSegConfig, Params
from esol.infra.io import atomic_dir, write_json, write_label_png
from esol.infra.progress import tqdm
from esol.infra.runtime import make_runtime
from esol.refine.crf import crf_from_probs
from esol.segmentation.network import build_seg_model, labels_of, predict_scores
from esol.training import checkpoint

log = logging.getLogger("esol.eval_seg")

OUTPUTS = ("metrics", "predictions")


class CrfScorer:
    """Dense-CRF post-processing of each prediction and its confusion matrix, in ``processes``
    worker processes (forked before the model is built, so before any CUDA context exists) while
    the net predicts the next batch; in this process when ``processes`` is 1."""

    def __init__(self, cfg: EvalSegConfig, num_classes: int, processes: int) -> None:
        self.cfg, self.k, self.processes = cfg, num_classes, processes
        self.conf = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.pool = mp.get_context("fork").Pool(processes) if processes > 1 else None
        self.pending: deque = deque()

    def add(self, image: np.ndarray, probs: np.ndarray, gt: np.ndarray) -> None:
        if self.pool is None:
            self.conf += confusion(gt, crf_from_probs(image, probs, self.cfg), self.k)
            return
        self.pending.append((self.pool.apply_async(crf_from_probs, (image, probs, self.cfg)), gt))
        while len(self.pending) > 4 * self.processes:  # bound the backlog (probability maps in flight)
            self._collect_one()

    def _collect_one(self) -> None:
        result, gt = self.pending.popleft()
        self.conf += confusion(gt, result.get(), self.k)

    def finish(self) -> np.ndarray:
        """The confusion matrix over every image added; stops the workers."""
        while self.pending:
            self._collect_one()
        self.close()
        return self.conf

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


def run(
    params: Params,
    *,
    data: Path,
    model: Path,
    metrics: Path,
    predictions: Path,
    variant: str = "esol",
    threads: int = 1,
) -> dict:
    """Predict DATA's ``val`` split with MODEL (the segmentation net trained on VARIANT's pseudo
    labels) at ``eval_seg.scales`` (+ flips); write METRICS and the PNGs to PREDICTIONS.

    METRICS holds the configured inference's scores, ``single_scale`` (scale 1.0, no flip: from the
    same forward pass; when 1.0 is among the scales), ``crf`` (dense-CRF post-processed, with
    ``eval_seg.crf``, over THREADS processes), each headline also flat (``miou_single_scale``,
    ``miou_crf``), and the all-background baseline, so a degenerate net is visible at once.
    Every val image is predicted; the ones with a mask are scored (none: METRICS says "not scored").
    """
    cfg = params.eval_seg
    dataset = Dataset(data)
    k = dataset.num_classes
    crf = CrfScorer(cfg, k, max(threads, 1)) if cfg.crf else None
    try:
        result = _evaluate(params, dataset, model, predictions, variant, crf)
    finally:
        if crf is not None:
            crf.close()
    write_json(metrics, result)
    if "miou" not in result:
        log.info("segmentation val (%s): not scored (no val image has a mask); predictions in %s", variant, predictions)
        return result
    log.info(
        "segmentation val (%s): mIoU %.2f, single scale %s, CRF %s (all-background predictor: %.2f)",
        variant,
        result["miou"],
        result.get("miou_single_scale"),
        result.get("miou_crf"),
        result["all_background_miou"],
    )
    return result


def _evaluate(
    params: Params, dataset: Dataset, model: Path, predictions: Path, variant: str, crf: CrfScorer | None
) -> dict:
    cfg = params.eval_seg
    k = dataset.num_classes
    runtime = make_runtime(params.runtime, params.dataset.seed)
    net = build_seg_model(params.train_seg, params.model, k, init_backbone=False)
    checkpoint.load_model_state(net, model)
    net.to(runtime.device).eval()
    conf = {name: np.zeros((k, k), dtype=np.int64) for name in ("main", "single_scale", "background")}
    views = len(cfg.scales) * (2 if cfg.flip else 1)
    ids = dataset.ids("val")
    scored = 0
    loader = DataLoader(
        InferenceSet(dataset, ids),
        batch_size=cfg.batch_size,
        num_workers=params.runtime.num_workers,
        collate_fn=collate_inference,
    )
    with (
        atomic_dir(predictions) as partial,
        tqdm(total=len(ids), desc=f"segmentation val {variant}", mininterval=5) as bar,
    ):
        for batch_ids, images in loader:
            groups: dict[tuple, list[int]] = defaultdict(list)
            for index, image in enumerate(images):
                groups[image.shape[:2]].append(index)
            for members in groups.values():
                total, plain = predict_scores(net, [images[i] for i in members], runtime.device, cfg.scales, cfg.flip)
                preds = labels_of(total)
                plain_preds = labels_of(plain) if plain is not None else [None] * len(members)
                probs = (total / views).cpu().numpy() if crf is not None else [None] * len(members)
                for pred, plain_pred, prob, index in zip(preds, plain_preds, probs, members, strict=True):
                    write_label_png(partial / f"{batch_ids[index]}.png", pred)
                    if not dataset.has_mask(batch_ids[index]):
                        continue
                    scored += 1
                    gt = dataset.mask(batch_ids[index])
                    conf["main"] += confusion(gt, pred, k)
                    conf["background"] += confusion(gt, np.zeros_like(gt), k)
                    if plain_pred is not None:
                        conf["single_scale"] += confusion(gt, plain_pred, k)
                    if crf is not None:
                        crf.add(images[index], prob, gt)
            bar.update(len(batch_ids))
        if crf is not None:
            conf["crf"] = crf.finish()
    if not scored:
        return {**not_scored("val", len(ids)), "variant": variant}
    result = scores(conf["main"], dataset.classes)
    result["all_background_miou"] = scores(conf["background"])["miou"]
    for name in ("single_scale", "crf"):
        if name in conf and (name != "single_scale" or 1.0 in cfg.scales):
            result[name] = scores(conf[name], dataset.classes)
            result[f"miou_{name}"] = result[name]["miou"]
    result.update(variant=variant, scales=list(cfg.scales), flip=cfg.flip)
    return result
