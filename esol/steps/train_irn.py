"""IRN training: the inter-pixel relation network on a variant's IR labels (the CRF step's output)."""

from __future__ import annotations

import logging
from pathlib import Path

from esol.data.layout import Dataset
from esol.infra import distributed
from esol.infra.config import Params
from esol.infra.io import write_json
from esol.infra.runtime import make_runtime
from esol.refine.affinity import pair_offsets
from esol.refine.irn import build_irn, irn_losses
from esol.refine.irn_data import IRLabelTrainSet
from esol.training import checkpoint
from esol.training.loop import TrainSpec, train, trainable

log = logging.getLogger("esol.train_irn")

OUTPUTS = ("out_model", "metrics", "live_dir", "checkpoint_dir")


def run(
    params: Params,
    *,
    data: Path,
    labels: Path,
    split: str,
    out_model: Path,
    metrics: Path,
    live_dir: Path,
    checkpoint_dir: Path,
) -> dict:
    """Train IRN's boundary and displacement branches on the IR labels in LABELS (SPLIT of DATA).

    Affinity pairs within ``train_irn.radius`` stride-4 cells; pairs with an uncertain end (255)
    are ignored. Writes OUT_MODEL, METRICS (the final epoch's losses), curves to LIVE_DIR and a
    resumable checkpoint per epoch to CHECKPOINT_DIR (resumed only for the same labels and params).
    """
    cfg = params.train_irn
    spread, result = distributed.spread_training(
        "train_irn",
        cfg.batch_size,
        params.runtime.device,
        run,
        params,
        data=data,
        labels=labels,
        split=split,
        out_model=out_model,
        metrics=metrics,
        live_dir=live_dir,
        checkpoint_dir=checkpoint_dir,
    )
    if spread:
        return result
    seed = params.dataset.seed * 100 + 20
    runtime = make_runtime(params.runtime, seed)
    dataset = Dataset(data)
    model = build_irn(params.model, cfg.train_backbone).to(runtime.device)
    model.train()
    pairs = pair_offsets(cfg.radius)
    edge_params, dp_params = model.branch_parameters()
    groups = [{"params": edge_params, "lr": cfg.lr}, {"params": dp_params, "lr": cfg.lr * 10}]
    if cfg.train_backbone:
        groups.append({"params": trainable(model.backbone.parameters()), "lr": cfg.lr})
    spec = TrainSpec(
        name="train_irn",
        param_groups=groups,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        fingerprint=checkpoint.fingerprint(
            "train_irn", cfg, params.model, params.dataset, params.synthetic, split, checkpoint.labels_digest(labels)
        ),
    )

    def step(batch, net):
        images, grid_labels = (runtime.to_device(t) for t in batch)
        edge, displacement = net(images)
        losses = irn_losses(edge, displacement, grid_labels, pairs)
        return losses.total, losses.scalars()

    samples = IRLabelTrainSet(dataset, split, Path(labels), cfg.crop_size, tuple(cfg.scale_range), seed)
    log.info("%s: %d images, %d pair offsets (radius %d)", split, len(samples), len(pairs), cfg.radius)
    summary = train(
        spec,
        model,
        samples,
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
    meta = {"backbone": params.model.backbone, "train_backbone": cfg.train_backbone, "radius": cfg.radius}
    checkpoint.save(out_model, {"model": model.state_dict(), "meta": meta})
    write_json(metrics, result)
    return result
