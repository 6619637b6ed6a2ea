"""Training: steps/s of the training loop with its data loading over steps/s of the bare compute step.

The loop side is ``esol.training.loop.run_epoch`` (what ``train`` runs each epoch) over the real loader
(``esol.training.loop.make_loader`` over ``ClassificationSet``: JPEG read, flip, crop, normalise,
collate, with ``runtime.num_workers`` workers) for a classifier stage's own step function. The
bare side is the same step, zero_grad, backward, optimizer and scheduler step on one batch
already on the device. Target: loop >= 0.9 x bare.

The sides alternate epoch by epoch (an epoch: ``--batches`` iterations). They are not interleaved
more finely because the loop reads ahead (loader workers, or run_epoch's read-ahead thread): a
bare iteration run inside the loop would hide the loading it overlaps.
"""

from __future__ import annotations

import sys
import tempfile
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

    from esol.data.loaders import ClassificationSet
    from esol.infra.config import params_from_dict
    from esol.infra.runtime import make_runtime
    from esol.method.stages import set_train_mode, set_trainable, stage_step
    from esol.training.classifier import build_model, param_groups
    from esol.training.loop import EpochPermutation, TrainSpec, make_loader, make_optimizer, run_epoch

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

        def bare() -> None:
            for _ in range(batches):
                with runtime.autocast():
                    loss, _scalars = step(fixed)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            float(loss.detach())
            if cuda:
                torch.cuda.synchronize()

        def loop() -> None:
            run_epoch(loader, step, optimizer, scheduler, runtime, desc="bench")
            if cuda:
                torch.cuda.synchronize()

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = common.interleaved({"bare": bare, "loop": loop}, common.reps(args), warmup=not args.quick)
        peak = torch.cuda.max_memory_allocated() if cuda else None

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
