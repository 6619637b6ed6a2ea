"""Segmentation training: DeepLabV3 on the pseudo labels (255 ignored)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from esol import checkpoint, distributed
from esol.config import Params
from esol.data.layout import Dataset
from esol.data.loaders import SegmentationTrainSet
from esol.io import IGNORE_LABEL, write_json
from esol.runtime import make_runtime
from esol.segmentation import build_seg_model
from esol.training import TrainSpec, train, trainable

log = logging.getLogger("esol.train_seg")

OUTPUTS = ("out_model", "metrics", "live_dir", "checkpoint_dir")


def labels_digest(labels: Path) -> str:
    """Short sha256 over the pseudo-label PNGs (names and bytes): a checkpoint resumes only the
    run that trained on these very labels (new labels after an upstream change: start afresh)."""
    digest = hashlib.sha256()
    for path in sorted(labels.glob("*.png")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run(
    params: Params, *, data: Path, labels: Path, out_model: Path, metrics: Path, live_dir: Path, checkpoint_dir: Path
) -> dict:
    """Train the segmentation net on DATA's train_aug images with the pseudo labels in LABELS.

    Writes OUT_MODEL, METRICS (final epoch's loss), curves to LIVE_DIR and a resumable
    checkpoint per epoch to CHECKPOINT_DIR. With several devices (``esol --gpus N``) one process
    per device runs it (DistributedDataParallel, see esol.distributed); rank 0 writes the outputs.
    """
    cfg = params.train_seg
    world, device_type = distributed.plan(params.runtime.device)
    if world > 1:
        distributed.check_batch("train_seg", cfg.batch_size, world)
        return distributed.launch(
            run,
            params,
            world=world,
            device_type=device_type,
            data=data,
            labels=labels,
            out_model=out_model,
            metrics=metrics,
            live_dir=live_dir,
            checkpoint_dir=checkpoint_dir,
        )
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
            {"params": head, "lr": cfg.lr * 10},
        ],
        optimizer="sgd",
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        fingerprint=checkpoint.fingerprint(
            "train_seg",
            cfg,
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
        SegmentationTrainSet(dataset, "train_aug", labels, cfg.crop_size, seed),
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
    checkpoint.save(out_model, {"model": model.state_dict(), "meta": {"arch": cfg.arch, "classes": dataset.classes}})
    write_json(metrics, result)
    return result
