"""Training: steps/s of the training loop with its data loading over steps/s of the bare compute step.

The loop side is ``esol.training.run_epoch`` (what ``train`` runs each epoch) over the real loader
(``esol.training.make_loader`` over ``ClassificationSet``: JPEG read, flip, crop, normalise,
collate, with ``runtime.num_workers`` workers) for a classifier stage's own step function. The
bare side is the same step, zero_grad, backward, optimizer and scheduler step on one batch
already on the device. Target: loop >= 0.9 x bare.

The two sides alternate iteration by iteration, so that other jobs on a shared machine slow both
alike: the step function handed to run_epoch first runs (and times) one bare iteration, and the
epoch's time minus those bare iterations is the loop's. (With loader workers, they prefetch
during the bare iteration too, which flatters the loop; the default synthetic config has none.)

The fixed cost of a ``train`` call beyond its epochs (dvclive, checkpoint) is measured once and
printed apart.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import common

TARGET = ">= 0.9"


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--stage", default="train_cam", choices=["train_cam", "train_expansion", "train_shrinkage"])
    ap.add_argument("--batches", type=int, help="iterations per side and repetition (default 4, quick 1)")
    ap.add_argument("--num-workers", type=int, help="loader workers (default: runtime.num_workers of the config)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="mixed precision (GPU)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format (GPU)")
    args = ap.parse_args(argv)
    title = f"Training ({args.stage}): loop with data loading vs bare compute step"
    if args.device == "cuda" and not torch.cuda.is_available():
        common.report(title, args, [common.Figure("training.loop_over_bare", None, TARGET)])
        return 0

    from esol.classifier import build_model, param_groups
    from esol.config import params_from_dict
    from esol.data.loaders import ClassificationSet
    from esol.runtime import make_runtime
    from esol.stages import set_train_mode, set_trainable, stage_step
    from esol.training import EpochPermutation, TrainSpec, make_loader, make_optimizer, run_epoch, train

    overrides = {
        "runtime": {"device": args.device, "amp": args.amp, "channels_last": "on" if args.channels_last else "off"}
    }
    if args.num_workers is not None:
        overrides["runtime"]["num_workers"] = args.num_workers
    raw = common.params_dict(args.quick, overrides)
    params = params_from_dict(raw)
    cfg = params.section(args.stage)
    batches = args.batches or (1 if args.quick else 4)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = common.synthetic_dataset(tmp / "data", raw, batches * cfg.batch_size)
        runtime = make_runtime(params.runtime, params.dataset.seed)
        model = build_model(params, dataset).to(runtime.device)
        if runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        set_trainable(model, args.stage)
        if args.stage == "train_expansion":
            model.grl_scale = cfg.grl_scale
        set_train_mode(model, args.stage, freeze_bn=False)
        spec = TrainSpec(
            name=args.stage,
            param_groups=param_groups(model, args.stage, cfg),
            optimizer=cfg.optimizer,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            epochs=1,
            batch_size=cfg.batch_size,
            seed=params.dataset.seed,
            fingerprint="bench",
        )
        optimizer = make_optimizer(spec)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
        train_set = ClassificationSet(dataset, "train_aug", cfg.crop_size, spec.seed)
        loader = make_loader(
            train_set,
            cfg.batch_size,
            EpochPermutation(len(train_set), spec.seed),
            runtime,
            params.runtime.num_workers,
            drop_last=True,
        )

        def step(batch, net=None):
            return stage_step(model, args.stage, batch, runtime.to_device, cfg, forward=net)

        fixed = tuple(runtime.to_device(t) for t in next(iter(loader)))
        cuda = runtime.device.type == "cuda"
        clock = time.perf_counter

        def bare_iteration() -> None:
            with runtime.autocast():
                loss, _scalars = step(fixed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if cuda:
                torch.cuda.synchronize()

        bare_times: list[float] = []

        def step_after_a_bare_one(batch, net=None):
            """run_epoch's step, preceded by one timed bare iteration (subtracted from the loop's time)."""
            start = clock()
            bare_iteration()
            bare_times.append(clock() - start)
            return step(batch, net)

        def epoch() -> tuple[float, float]:
            """(bare, loop) seconds of one epoch of ``batches`` iterations each, alternating."""
            bare_times.clear()
            if cuda:
                torch.cuda.synchronize()
            start = clock()
            run_epoch(loader, step_after_a_bare_one, optimizer, scheduler, runtime, desc="bench")
            if cuda:
                torch.cuda.synchronize()
            total = clock() - start
            return sum(bare_times), total - sum(bare_times)

        if not args.quick:
            epoch()  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        pairs = [epoch() for _ in range(common.reps(args))]
        times = {"bare": [b for b, _ in pairs], "loop": [lo for _, lo in pairs]}
        peak = torch.cuda.max_memory_allocated() if cuda else None

        epoch_overhead = None
        if not args.quick:  # context: train() for one epoch of the same batches, minus the loop alone
            start = time.perf_counter()
            train(spec, model, train_set, step, runtime, tmp / "ckpt", tmp / "live", params.runtime.num_workers)
            epoch_overhead = round(time.perf_counter() - start - statistics.median(times["loop"]), 3)

    ratio = common.ratios(times["bare"], times["loop"])
    images = batches * cfg.batch_size
    bare_ips = common.stats([images / t for t in times["bare"]])
    loop_ips = common.stats([images / t for t in times["loop"]])
    extra = {
        "inputs": f"{batches} batches of {cfg.batch_size} synthetic {cfg.crop_size}px crops, stage {args.stage}, "
        f"num_workers {params.runtime.num_workers}, device {runtime.device}, amp {args.amp}, "
        f"channels_last {runtime.channels_last}",
        "bare images/s": bare_ips,
        "loop images/s": loop_ips,
        "fixed cost of a train() call beyond its epoch (dvclive, checkpoint), s": epoch_overhead,
    }
    if cuda:
        extra["gpu memory peak (MiB)"] = round(peak / 2**20, 1)
    figure = common.Figure(
        "training.loop_over_bare",
        ratio.median,
        TARGET,
        detail=f"loop {loop_ips.median:.3g} img/s, bare {bare_ips.median:.3g} img/s",
        spread=f"[{ratio.low:.3g}, {ratio.high:.3g}]",
    )
    common.report(title, args, [figure], **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
