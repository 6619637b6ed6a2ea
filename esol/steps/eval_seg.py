"""Segmentation evaluation on the validation split's ground truth."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from esol import checkpoint
from esol.config import Params
from esol.data.layout import Dataset
from esol.data.loaders import InferenceSet, collate_inference
from esol.io import atomic_dir, write_json, write_label_png
from esol.metrics import confusion, scores
from esol.progress import tqdm
from esol.runtime import make_runtime
from esol.segmentation import build_seg_model, predict

log = logging.getLogger("esol.eval_seg")

OUTPUTS = ("metrics", "predictions")


def run(params: Params, *, data: Path, model: Path, metrics: Path, predictions: Path) -> dict:
    """Predict DATA's ``val`` split with MODEL (flip-averaged); write METRICS and PNGs to PREDICTIONS.

    METRICS also carries the all-background baseline, so a degenerate net is visible at once.
    """
    runtime = make_runtime(params.runtime, params.dataset.seed)
    dataset = Dataset(data)
    k = dataset.num_classes
    net = build_seg_model(params.train_seg, params.model, k)
    checkpoint.load_model_state(net, model)
    net.to(runtime.device).eval()
    conf = np.zeros((k, k), dtype=np.int64)
    background = np.zeros((k, k), dtype=np.int64)
    ids = dataset.ids("val")
    loader = DataLoader(
        InferenceSet(dataset, ids),
        batch_size=params.eval_seg.batch_size,
        num_workers=params.runtime.num_workers,
        collate_fn=collate_inference,
    )
    with atomic_dir(predictions) as partial, tqdm(total=len(ids), desc="segmentation val", mininterval=5) as bar:
        for batch_ids, images in loader:
            groups: dict[tuple, list[int]] = defaultdict(list)
            for index, image in enumerate(images):
                groups[image.shape[:2]].append(index)
            for members in groups.values():
                preds = predict(net, [images[i] for i in members], runtime.device)
                for pred, index in zip(preds, members, strict=True):
                    gt = dataset.mask(batch_ids[index])
                    conf += confusion(gt, pred, k)
                    background += confusion(gt, np.zeros_like(gt), k)
                    write_label_png(partial / f"{batch_ids[index]}.png", pred)
            bar.update(len(batch_ids))
    result = scores(conf, dataset.classes)
    result["all_background_miou"] = scores(background)["miou"]
    write_json(metrics, result)
    log.info(
        "segmentation val: mIoU %.2f (all-background predictor: %.2f)", result["miou"], result["all_background_miou"]
    )
    return result
