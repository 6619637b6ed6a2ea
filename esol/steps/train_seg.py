"""Segmentation training on one variant's pseudo labels: rescale, flip, crop; poly lr, head at 10x; 255 ignored."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from esol.data.layout import Dataset
from esol.data.loaders import SegmentationTrainSet
from esol.infra import distributed
from esol.infra.config import ConfigError, Params
from esol.infra.io import IGNORE_LABEL, write_json
from esol.infra.runtime import make_runtime
from esol.segmentation.network import build_seg_model
from esol.training import checkpoint
from esol.training.checkpoint import labels_digest
from esol.training.loop import TrainSpec, train, trainable

log = logging.getLogger("esol.train_seg")

OUTPUTS = ("out_model", "metrics", "live_dir", "checkpoint_dir")


def run(
    params: Params, *, data: Path, labels: Path, out_model: Path, metrics: Path, live_dir: Path, checkpoint_dir: Path
) -> dict:
    """Train the segmentation net on DATA's train_aug images with the pseudo labels in LABELS.

    Writes OUT_MODEL, METRICS (final epoch's loss), curves to LIVE_DIR and a resumable
    checkpoint per epoch to CHECKPOINT_DIR. With several devices (``esol --gpus N``) one process
    per device runs it (DistributedDataParallel, see esol.infra.distributed); rank 0 writes the outputs.
    """
    cfg = params.train_seg
    if cfg.scale_min > cfg.scale_max:
        raise ConfigError(f"train_seg.scale_min {cfg.scale_min} exceeds train_seg.scale_max {cfg.scale_max}")
    spread, result = distributed.spread_training(
        "train_seg",
        cfg.batch_size,
        params.runtime.device,
        run,
        params,
        data=data,
        labels=labels,
        out_model=out_model,
        metrics=metrics,
        live_dir=live_dir,
        checkpoint_dir=checkpoint_dir,
    )
    if spread:
        return result
    seed = params.dataset.seed * 100 + 10
    runtime = make_runtime(params.runtime, seed)
    dataset = Dataset(data)
    model = build_seg_model(cfg, params.model, dataset.num_classes).to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    head = list(model.classifier.parameters())
    head_ids = {id(p) for p in head}
    spec = TrainSpec(
        name="train_seg",
        param_groups=[
            {"params": [p for p in trainable(model.parameters()) if id(p) not in head_ids], "lr": cfg.lr},
            {"params": head, "lr": cfg.lr * cfg.lr_head_factor},
        ],
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        fingerprint=checkpoint.fingerprint(
            "train_seg",
            dataclasses.replace(cfg, variants=()),  # which other variants train too: not this run's business
            params.model,
            params.dataset,
            params.synthetic,
            labels_digest(Path(labels)),
        ),
    )

    def step(batch, net):
        images, target = (runtime.to_device(t) for t in batch)
        logits = net(images)["out"]
        loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_LABEL)
        return loss, {}

    summary = train(
        spec,
        model,
        SegmentationTrainSet(dataset, "train_aug", labels, cfg.crop_size, seed, (cfg.scale_min, cfg.scale_max)),
        step,
        runtime=runtime,
        checkpoint_dir=checkpoint_dir,
        live_dir=live_dir,
        num_workers=params.runtime.num_workers,
    )
    result = {k: round(v, 6) for k, v in summary.items()}
    if not distributed.current().is_main:
        return result
    model.cpu()
    # settings: what `esol predict` rebuilds the net from, whatever params file it is given
    settings = {"model": dataclasses.asdict(params.model), "train_seg": dataclasses.asdict(cfg)}
    meta = {"arch": cfg.arch, "classes": dataset.classes, "settings": settings}
    checkpoint.save(out_model, {"model": model.state_dict(), "meta": meta})
    write_json(metrics, result)
    return result
