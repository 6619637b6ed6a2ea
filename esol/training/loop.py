"""One training loop for every stage: poly schedule, per-epoch checkpoints, resume, dvclive."""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from esol.data.loaders import prefetch
from esol.infra import distributed
from esol.infra.config import ConfigError
from esol.infra.numerics import NonFiniteError, TrainingDiverged
from esol.infra.progress import tqdm
from esol.infra.runtime import Runtime
from esol.training import checkpoint

log = logging.getLogger("esol.training.loop")

# step(batch, net): the loss and scalars of one batch; ``net`` is the module to run the forward
# pass through (the model itself, or its DistributedDataParallel wrapper).
StepFn = Callable[[Any, torch.nn.Module], tuple[torch.Tensor, dict[str, float | torch.Tensor]]]


class EpochPermutation(Sampler):
    """Shuffles as a pure function of (seed, epoch): a resumed run sees the same order.

    With ``carry_epoch`` it yields ``(epoch, index)`` pairs instead of indices: the dataset reads
    the epoch from the index it is handed, so data-loader worker processes (which keep their own
    copy of the dataset, for good with persistent workers) augment each epoch afresh.

    With ``world`` > 1 processes every rank draws the same permutation and takes its own
    ``batch_size / world`` slice of each full global batch of it: at every step the ranks' slices
    make up exactly the batch one process would take, and over an epoch their union is exactly
    the single-process epoch (whose incomplete last batch is dropped as well).
    """

    def __init__(
        self, size: int, seed: int, rank: int = 0, world: int = 1, batch_size: int = 1, carry_epoch: bool = False
    ) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.carry_epoch = carry_epoch
        self.rank, self.world = rank, world
        if world > 1:
            if batch_size % world or not 0 <= rank < world:
                raise ValueError(f"batch_size {batch_size} cannot be split over {world} ranks (rank {rank})")
            self.batches, self.share = size // batch_size, batch_size // world
            self.batch_size = batch_size

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        if self.world > 1:
            starts = np.arange(self.batches)[:, None] * self.batch_size + self.rank * self.share
            order = order[starts + np.arange(self.share)].reshape(-1)
        if self.carry_epoch:
            return iter([(self.epoch, index) for index in order.tolist()])
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.size if self.world == 1 else self.batches * self.share


@dataclass
class TrainSpec:
    """What a stage trains and how."""

    name: str
    param_groups: list[dict[str, Any]]
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int
    seed: int
    fingerprint: str


def make_optimizer(spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD with momentum over the spec's non-empty parameter groups."""
    groups = [g for g in spec.param_groups if g["params"]]
    return torch.optim.SGD(groups, momentum=spec.momentum, weight_decay=spec.weight_decay)


def trainable(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [p for p in params if p.requires_grad]


def make_loader(
    dataset: Dataset, batch_size: int, sampler: Sampler, runtime: Runtime, num_workers: int, drop_last: bool
) -> DataLoader:
    """The training loader: with workers, each prefetches two batches while the model computes."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=num_workers > 0,
    )


def run_epoch(
    loader: Iterable,
    step: StepFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    runtime: Runtime,
    desc: str = "train",
    net: torch.nn.Module | None = None,
    show: bool = True,
    scaler: torch.amp.GradScaler | None = None,
    where: str = "training",
) -> dict[str, float]:
    """One pass over ``loader``: ``step(batch, net)``, backward, optimizer and scheduler step per batch.

    Under fp16 the loss is scaled (``scaler``, by default ``runtime.grad_scaler()``): the
    optimizer step is skipped, and the scale lowered, where the scaled gradients overflowed.

    Returns the epoch's mean of the loss and of each scalar ``step`` reports. Scalars may be
    tensors: they are summed where they live (float64) and read once, at the end of the epoch,
    so a GPU step never waits for the host; the progress bar reads the running loss only when
    it redraws. The loss itself is checked at every step, before the optimizer uses it (one
    host sync per step): a NaN or infinite loss raises :class:`TrainingDiverged` naming
    ``where`` (stage and epoch), the step and the last finite loss.
    """
    sums: dict[str, Any] = {}
    count = 0
    scaler = scaler if scaler is not None else runtime.grad_scaler()
    last_finite: float | None = None
    # Without worker processes, a thread reads the next batch while the model computes.
    batches = prefetch(loader) if getattr(loader, "num_workers", 1) == 0 else loader
    bar = tqdm(batches, desc=desc, mininterval=5, leave=False, disable=not show, total=len(loader))
    shown = time.monotonic()
    for batch in bar:
        try:
            with runtime.autocast():
                loss, scalars = step(batch, net)
        except NonFiniteError as exc:
            raise TrainingDiverged(
                f"{where}, step {count + 1}/{len(loader)}: {exc}; last finite loss {last_finite}"
            ) from exc
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{where}, step {count + 1}/{len(loader)}: the loss is {value} (last finite loss {last_finite}); "
                "no model is written. Lower the learning rates (params.yaml) or check the input data."
            )
        last_finite = value
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        count += 1
        for key, value in {"loss": loss.detach(), **scalars}.items():
            value = value.double() if isinstance(value, torch.Tensor) else float(value)
            sums[key] = value if key not in sums else sums[key] + value
        if time.monotonic() - shown >= 5:
            shown = time.monotonic()
            bar.set_postfix(loss=f"{float(sums['loss']) / count:.4f}", refresh=False)
    return {key: float(value) / max(count, 1) for key, value in sums.items()}


def train(
    spec: TrainSpec,
    model: torch.nn.Module,
    dataset: Dataset,
    step: StepFn,
    runtime: Runtime,
    checkpoint_dir: Path,
    live_dir: Path,
    num_workers: int = 0,
    on_epoch_start: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``spec.epochs``; resumes from ``checkpoint_dir/last.pt`` when it matches.

    ``step(batch, net)`` returns the loss and scalars to log. Returns the last epoch's mean scalars.

    Inside a process group of several ranks (:func:`esol.infra.distributed.launch`) the model is wrapped
    in DistributedDataParallel and each rank trains on ``batch_size / world`` samples of every
    batch: the total batch, the number of steps and the learning rates are those of one process.
    Only rank 0 writes the checkpoint and the dvclive curves; the scalars are averaged over ranks.
    """
    from dvclive import Live

    ctx = distributed.current()
    # Datasets that augment by epoch read it from the sampler's (epoch, index) pairs (workers included).
    carry_epoch = bool(getattr(dataset, "takes_epoch_index", False))
    if ctx.distributed:
        distributed.check_batch(spec.name, spec.batch_size, ctx.world)
        if len(dataset) < spec.batch_size:
            raise ConfigError(
                f"{spec.name}: {len(dataset)} training samples, fewer than one batch of {spec.batch_size}: "
                f"cannot train on {ctx.world} processes"
            )
        sampler = EpochPermutation(len(dataset), spec.seed, ctx.rank, ctx.world, spec.batch_size, carry_epoch)
        net = _wrap_ddp(model, runtime.device)
    else:
        sampler = EpochPermutation(len(dataset), spec.seed, carry_epoch=carry_epoch)
        net = model
    loader = make_loader(
        dataset,
        spec.batch_size // ctx.world if ctx.distributed else spec.batch_size,
        sampler,
        runtime,
        num_workers,
        drop_last=len(dataset) >= spec.batch_size,
    )
    optimizer = make_optimizer(spec)
    total = spec.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(1 - it / total, 0.0) ** 0.9)
    scaler = runtime.grad_scaler()

    start_epoch = 0
    summary: dict[str, float] = {}
    computed_on = [compute_signature(runtime)]  # every set-up the run has trained on, oldest first
    last = checkpoint_dir / "last.pt"
    if last.is_file():
        state = checkpoint.safe_load(last)
        if state.get("fingerprint") == spec.fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler.is_enabled() and state.get("grad_scaler"):
                scaler.load_state_dict(state["grad_scaler"])
            torch.set_rng_state(state["torch_rng"])
            random.setstate(_tuple_state(state["python_rng"]))
            start_epoch = int(state["epoch"]) + 1
            summary = dict(state.get("summary", {}))
            log.info("%s: resuming after epoch %d from %s", spec.name, start_epoch, last)
            computed_on = list(dict.fromkeys([*state.get("computed_on", []), *computed_on]))
            if len(computed_on) > 1 and start_epoch < spec.epochs:
                # Not part of the fingerprint: restarting would throw finished epochs away for a
                # result that is just as valid, only not bit-identical to an uninterrupted run.
                log.warning(
                    "%s: this run has now trained on %s: its result is valid but not bit-identical to "
                    "an uninterrupted run on any one of them",
                    spec.name,
                    " and ".join(computed_on),
                )
        else:
            log.info("%s: ignoring %s (written for other params)", spec.name, last)

    # dvclive logs beside the checkpoint, which outlives the job: a resumed run (after a kill, or
    # a rerun once every epoch is done, whose outputs Snakemake and DVC delete first) then
    # still hands over the curves of every epoch to LIVE_DIR.
    history = Path(checkpoint_dir) / "live"
    live = None
    if ctx.is_main:
        live = Live(str(history), dvcyaml=None, save_dvc_exp=False, resume=start_epoch > 0, report=None)
        live.step = start_epoch
    for epoch in range(start_epoch, spec.epochs):
        sampler.epoch = epoch
        if hasattr(dataset, "epoch"):
            dataset.epoch = epoch
        if on_epoch_start:
            on_epoch_start(epoch)
        summary = run_epoch(
            loader,
            step,
            optimizer,
            scheduler,
            runtime,
            desc=f"{spec.name} epoch {epoch + 1}/{spec.epochs}",
            net=net,
            show=ctx.is_main,
            scaler=scaler,
            where=f"{spec.name}, epoch {epoch + 1}/{spec.epochs}",
        )
        summary = distributed.all_mean(summary, runtime.device)
        summary["lr"] = optimizer.param_groups[0]["lr"]
        if not ctx.is_main:
            continue
        checkpoint.save(
            last,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "grad_scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch,
                "fingerprint": spec.fingerprint,
                "computed_on": computed_on,
                "torch_rng": torch.get_rng_state(),
                "python_rng": list(random.getstate()),
                "summary": summary,
            },
        )
        for key, value in summary.items():
            live.log_metric(f"train/{key}", value)
        live.next_step()
        log.info(
            "%s epoch %d/%d: %s",
            spec.name,
            epoch + 1,
            spec.epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in summary.items()),
        )
    if live is not None:
        live.end()
        live_dir = Path(live_dir)
        if live_dir.exists():
            shutil.rmtree(live_dir)
        if history.is_dir():
            shutil.copytree(history, live_dir)
        else:
            live_dir.mkdir(parents=True)
    return summary


def compute_signature(runtime: Runtime) -> str:
    """What decides a run's floating-point path besides its params: the device kind, the CPU
    thread count or the GPU model, and the number of processes."""
    if runtime.device.type == "cpu":
        where = f"CPU with {torch.get_num_threads()} threads"
    else:
        where = torch.cuda.get_device_name(runtime.device)
    world = distributed.current().world
    return where if world == 1 else f"{world} x {where}"


def _wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (which keeps its parameters: optimiser groups and
    the caller's references stay valid). On GPU, BatchNorm layers become SyncBatchNorm, so that
    batch statistics cover the whole batch as in one process; gloo (CPU) has no SyncBatchNorm,
    so there each rank normalises over its own slice."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise TypeError("a model that is itself a BatchNorm layer cannot be trained on several GPUs")
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def _tuple_state(state: Any) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
