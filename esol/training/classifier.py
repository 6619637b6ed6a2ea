"""Shared by the three classifier training steps: build, load, train one stage, save."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from esol.data.layout import Dataset
from esol.data.loaders import ClassificationSet
from esol.infra import distributed
from esol.infra.config import Params
from esol.infra.io import write_json
from esol.infra.runtime import make_runtime
from esol.method.model import ESOLNet
from esol.method.stages import STAGES, set_train_mode, set_trainable, stage_step
from esol.training import checkpoint
from esol.training.loop import TrainSpec, train, trainable

log = logging.getLogger("esol.training.classifier")


def build_model(params: Params, dataset: Dataset) -> ESOLNet:
    return ESOLNet(params.model, dataset.num_classes - 1)


def load_model(params: Params, dataset: Dataset, path: Path) -> ESOLNet:
    """A trained classifier, clipping its features as it was trained to (``clipped`` in its metadata)."""
    model = build_model(params, dataset)
    meta = checkpoint.load_model_state(model, path)
    model.clipped = bool(meta.get("clipped", True))  # files from before model.clip_from always clipped
    return model


def clipped_in(stage: str, params: Params, init_meta: dict) -> bool:
    """Whether ``stage`` trains with feature clipping (``model.clip_from``).

    With ``clip_from: expansion`` the clip belongs to the expansion stage, as the method figure
    draws it: stage 0 trains a plain CAM, stage 1 switches the clip on, and stage 2 keeps what its
    starting model had (esol: clipped; the shrinkage-only variant, trained from the cam model: not).
    """
    if stage == "train_cam":
        return params.model.clip_from == "cam"
    if stage == "train_expansion":
        return True
    return bool(init_meta.get("clipped", True))


def param_groups(model: ESOLNet, stage: str, cfg) -> list[dict]:
    """Learning rates per parameter group, as each stage's config names them."""
    if stage == "train_cam":
        return [
            {"params": trainable(model.backbone.parameters()), "lr": cfg.lr},
            {"params": trainable([model.w1]), "lr": cfg.lr_w1},
            {"params": trainable(model.classifier.parameters()), "lr": cfg.lr_new},
        ]
    sampler = model.off1 if stage == "train_expansion" else model.off2
    return [
        {"params": trainable(model.classifier.parameters()), "lr": cfg.lr},
        {"params": trainable(sampler.parameters()), "lr": cfg.lr_offset},
    ]


def train_stage(
    stage: str,
    params: Params,
    *,
    data_dir: Path,
    init_model: Path | None,
    out_model: Path,
    metrics: Path,
    live_dir: Path,
    checkpoint_dir: Path,
) -> dict:
    """Train ``stage`` starting from ``init_model`` (None: fresh) and write the model + metrics.

    With several devices (``esol --gpus N``, see :mod:`esol.infra.distributed`) one process per device
    runs this function; rank 0 writes the outputs.
    """
    cfg = params.section(stage)
    spread, result = distributed.spread_training(
        stage,
        cfg.batch_size,
        params.runtime.device,
        train_stage,
        stage,
        params,
        data_dir=data_dir,
        init_model=init_model,
        out_model=out_model,
        metrics=metrics,
        live_dir=live_dir,
        checkpoint_dir=checkpoint_dir,
    )
    if spread:
        return result
    stage_index = STAGES.index(stage)
    runtime = make_runtime(params.runtime, params.dataset.seed * 100 + stage_index)
    dataset = Dataset(data_dir)
    model = build_model(params, dataset)
    init_meta = checkpoint.load_model_state(model, init_model) if init_model is not None else {}
    model.clipped = clipped_in(stage, params, init_meta)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    set_trainable(model, stage)
    if stage == "train_expansion":
        model.grl_scale = cfg.grl_scale
    freeze_bn = params.model.pretrained or bool(params.model.weights_file)
    spec = TrainSpec(
        name=stage,
        param_groups=param_groups(model, stage, cfg),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=params.dataset.seed * 100 + stage_index,
        fingerprint=checkpoint.fingerprint(
            stage, cfg, params.model, params.dataset, params.synthetic, checkpoint.file_digest(init_model)
        ),
    )
    train_set = ClassificationSet(dataset, "train_aug", cfg.crop_size, spec.seed, cfg.resize_long)
    summary = train(
        spec,
        model,
        train_set,
        step=lambda batch, net: stage_step(model, stage, batch, runtime.to_device, cfg, forward=net),
        runtime=runtime,
        checkpoint_dir=checkpoint_dir,
        live_dir=live_dir,
        num_workers=params.runtime.num_workers,
        on_epoch_start=lambda _epoch: set_train_mode(model, stage, freeze_bn),
    )
    result = {"stage": stage, **{k: round(v, 6) for k, v in summary.items()}}
    if not distributed.current().is_main:
        return result
    model.cpu()
    meta = {"stage": stage, "classes": dataset.classes, "clipped": model.clipped}
    meta["settings"] = {"model": dataclasses.asdict(params.model)}  # what `esol predict` rebuilds the net from
    checkpoint.save(out_model, {"model": model.state_dict(), "meta": meta})
    write_json(metrics, result)
    return result
