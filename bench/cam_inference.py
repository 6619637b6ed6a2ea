"""CAM inference: images/s of the whole make_cam step over images/s of the bare model forward.

The step side is ``esol.steps.make_cam.run`` (read, resize, multi-scale + flip forward, normalise,
quantise, write one file per image); the bare side runs only ``model(x)`` on inputs prepared in
advance, at the same scales, flips and batch size. Target: step >= 0.8 x bare.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import common

TARGET = ">= 0.8"


def bare_inputs(dataset, ids, cfg, runtime) -> list[list[torch.Tensor]]:
    """Per batch, per scale: the (flipped-and-concatenated) input tensor make_cam feeds the model."""
    from esol.data.loaders import normalize

    batches = []
    for start in range(0, len(ids), cfg.batch_size):
        batch = torch.stack([normalize(dataset.image(i)) for i in ids[start : start + cfg.batch_size]])
        h, w = batch.shape[2:]
        per_scale = []
        for scale in cfg.scales:
            size = (max(round(h * scale), 1), max(round(w * scale), 1))
            x = batch if scale == 1.0 else F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
            if cfg.flip:
                x = torch.cat([x, x.flip(-1)])
            per_scale.append(runtime.to_device(x))
        batches.append(per_scale)
    return batches


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--images", type=int, help="images per side and repetition (default 32, quick 4)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="mixed precision (GPU)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format (GPU)")
    args = ap.parse_args(argv)
    title = "CAM inference: make_cam step vs bare forward"
    if args.device == "cuda" and not torch.cuda.is_available():
        common.report(title, args, [common.Figure("cam_inference.step_over_bare", None, TARGET)])
        return 0

    from esol.infra.config import params_from_dict
    from esol.infra.runtime import make_runtime
    from esol.steps import make_cam
    from esol.training.classifier import load_model

    n = args.images or (4 if args.quick else 32)
    raw = common.params_dict(
        args.quick,
        {"runtime": {"device": args.device, "amp": args.amp, "channels_last": "on" if args.channels_last else "off"}},
    )
    params = params_from_dict(raw)
    cfg = params.make_cam
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = common.synthetic_dataset(tmp / "data", raw, n)
        common.untrained_model(params, dataset, tmp / "model.pt")
        runtime = make_runtime(params.runtime, params.dataset.seed)  # the step's global torch settings, both sides
        net = load_model(params, dataset, tmp / "model.pt").to(runtime.device).eval()
        net.use_offsets = True
        if runtime.channels_last:
            net.to(memory_format=torch.channels_last)
        inputs = bare_inputs(dataset, dataset.ids("train"), cfg, runtime)
        cuda = runtime.device.type == "cuda"
        peaks: dict[str, int] = {}

        def bare() -> None:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode(), runtime.autocast():
                for batch in inputs:
                    for x in batch:
                        net(x)
            if cuda:
                torch.cuda.synchronize()
                peaks["bare"] = torch.cuda.max_memory_allocated()

        runs = itertools.count()

        def step() -> None:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            out_dir = tmp / f"cams{next(runs)}"
            make_cam.run(params, data=dataset.root, model=tmp / "model.pt", split="train", out_dir=out_dir)
            if cuda:
                torch.cuda.synchronize()
                peaks["step"] = torch.cuda.max_memory_allocated()

        times = common.interleaved({"bare": bare, "step": step}, common.reps(args), warmup=not args.quick)
        profile = common.profile(step) if args.profile else None
    ratio = common.ratios(times["bare"], times["step"])  # (n / step) / (n / bare)
    bare_ips = common.stats([n / t for t in times["bare"]])
    step_ips = common.stats([n / t for t in times["step"]])
    extra = {
        "inputs": f"{n} synthetic {raw['synthetic']['image_size']}px images, scales {list(cfg.scales)}, "
        f"flip {cfg.flip}, batch {cfg.batch_size}, device {runtime.device}, amp {args.amp}, "
        f"channels_last {runtime.channels_last}",
        "bare images/s": bare_ips,
        "step images/s": step_ips,
    }
    if cuda:
        extra["gpu memory peak (MiB)"] = {k: round(v / 2**20, 1) for k, v in peaks.items()}
    figure = common.Figure(
        "cam_inference.step_over_bare",
        ratio.median,
        TARGET,
        detail=f"step {step_ips.median:.3g} img/s, bare {bare_ips.median:.3g} img/s",
        spread=f"[{ratio.low:.3g}, {ratio.high:.3g}]",
    )
    if profile:
        extra["profile of one step"] = "\n" + profile
    common.report(title, args, [figure], **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
