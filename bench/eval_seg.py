"""Segmentation evaluation: images/s of the whole eval_seg step over images/s of the bare forward.

The step side is ``esol.steps.eval_seg.run`` (read images and ground truth, multi-scale + flip
forward, softmax, upsample, argmax, the plain single-scale and all-background confusion matrices,
one PNG per image); the bare side runs only ``model(x)`` on inputs prepared in advance, at the
same scales, flips and batch size. Measured once at the configured scales (synthetic: [1.0] +
flip) and once multi-scale (0.5, 1.0, 1.5 + flip), both without the CRF (CPU post-processing,
timed on its own in bench.crf); the step with the CRF is printed for context. Target: >= 0.8.
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
MULTI_SCALE = [0.5, 1.0, 1.5]


def bare_inputs(dataset, ids, scales, flip, batch_size, runtime) -> list[torch.Tensor]:
    """Every input tensor eval_seg feeds the model: per batch, per scale, the batch (and its mirror)."""
    from esol.data.loaders import normalize

    inputs = []
    for start in range(0, len(ids), batch_size):
        batch = torch.stack([normalize(dataset.image(i)) for i in ids[start : start + batch_size]])
        h, w = batch.shape[2:]
        for scale in scales:
            size = (max(round(h * scale), 1), max(round(w * scale), 1))
            x = batch if scale == 1.0 else F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
            inputs += [runtime.to_device(x), runtime.to_device(x.flip(-1))] if flip else [runtime.to_device(x)]
    return inputs


def make_dataset(root: Path, raw: dict, images: int):
    """The synthetic dataset of RAW with IMAGES validation images (and a token train split)."""
    from esol.data.layout import Dataset
    from esol.data.synthetic import generate
    from esol.infra.config import deep_merge, params_from_dict

    sized = deep_merge(raw, {"synthetic": {"num_train_aug": 2, "num_train": 1, "num_val": images}})
    p = params_from_dict(sized)
    generate(root, p.synthetic, p.dataset.seed)
    return Dataset(root)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--images", type=int, help="validation images per side and repetition (default 64, quick 4)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args(argv)
    title = "Segmentation evaluation: eval_seg step vs bare forward"
    names = ["eval_seg.step_over_bare[configured scales]", "eval_seg.step_over_bare[0.5,1.0,1.5]"]
    if args.device == "cuda" and not torch.cuda.is_available():
        common.report(title, args, [common.Figure(name, None, TARGET) for name in names])
        return 0

    from esol.infra.config import deep_merge, params_from_dict
    from esol.infra.runtime import make_runtime
    from esol.segmentation.network import build_seg_model
    from esol.steps import eval_seg
    from esol.training import checkpoint

    n = args.images or (4 if args.quick else 64)
    raw = common.params_dict(args.quick, {"runtime": {"device": args.device}, "eval_seg": {"crf": False}})
    configured = params_from_dict(raw)
    settings = {
        names[0]: configured,
        names[1]: params_from_dict(deep_merge(raw, {"eval_seg": {"scales": MULTI_SCALE}})),
    }
    figures, extra = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = make_dataset(tmp / "data", raw, n)
        torch.manual_seed(0)
        net = build_seg_model(configured.train_seg, configured.model, dataset.num_classes, init_backbone=False)
        checkpoint.save(tmp / "seg.pt", {"model": net.state_dict(), "meta": {"arch": configured.train_seg.arch}})
        runtime = make_runtime(configured.runtime, configured.dataset.seed)  # the step's torch settings, both sides
        net.to(runtime.device).eval()
        runs = itertools.count()
        cuda = runtime.device.type == "cuda"

        def step_of(params):
            def step() -> None:
                out = tmp / f"run{next(runs)}"
                eval_seg.run(params, data=dataset.root, model=tmp / "seg.pt", metrics=out / "m.json", predictions=out)
                if cuda:
                    torch.cuda.synchronize()

            return step

        for name, params in settings.items():
            cfg = params.eval_seg
            inputs = bare_inputs(dataset, dataset.ids("val"), cfg.scales, cfg.flip, cfg.batch_size, runtime)

            def bare(inputs=inputs) -> None:
                with torch.inference_mode():
                    for x in inputs:
                        net(x)["out"]
                if cuda:
                    torch.cuda.synchronize()

            step = step_of(params)
            times = common.interleaved({"bare": bare, "step": step}, common.reps(args), warmup=not args.quick)
            ratio = common.ratios(times["bare"], times["step"])
            bare_ips = common.stats([n / t for t in times["bare"]])
            step_ips = common.stats([n / t for t in times["step"]])
            figures.append(
                common.Figure(
                    name,
                    ratio.median,
                    TARGET,
                    detail=f"step {step_ips.median:.3g} img/s, bare {bare_ips.median:.3g} img/s",
                    spread=f"[{ratio.low:.3g}, {ratio.high:.3g}]",
                )
            )
            extra[f"{name}: scales"] = f"{list(cfg.scales)}, flip {cfg.flip}, batch {cfg.batch_size}"
            if args.profile and name == names[0]:
                extra["profile of one step"] = "\n" + common.profile(step)
        with_crf = params_from_dict(deep_merge(raw, {"eval_seg": {"crf": True}}))
        crf_times = common.interleaved({"crf": step_of(with_crf)}, common.reps(args, 3), warmup=False)["crf"]
        extra["step with the CRF, configured scales (images/s)"] = common.stats([n / t for t in crf_times])
    extra = {
        "inputs": f"{n} synthetic {raw['synthetic']['image_size']}px val images, {configured.train_seg.arch}, "
        f"device {runtime.device}",
        **extra,
    }
    common.report(title, args, figures, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
