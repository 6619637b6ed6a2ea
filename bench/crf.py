"""CRF refinement: per-image cost of the refine_crf step over bare pydensecrf calls; parallel speed-up.

Sides, on the same images and CAM files (seeds drawn from blurred ground-truth masks, so the
label counts are the real ones): ``bare`` makes only the pydensecrf calls a pseudo label needs
(two maps per image, the confident-foreground and confident-background ones, sharing one CRF's
pairwise terms) on arrays prepared in advance; ``serial`` is ``esol.steps.refine_crf.run`` with
one process (read image and CAMs, seeds, unaries, CRF, labels, PNG write); ``parallel`` is the
same with one process per core.

The per-image cost is also timed image by image (the step's per-image function and the bare
calls of that image, alternating), and the figure sums each image's fastest time over the
repetitions: other jobs on a shared machine only ever add time.

Targets: serial per-image cost <= 1.1 x bare; parallel speed-up over serial >= 0.8 x cores. On a
shared machine the cores are not all ours: ``bare_parallel`` (the bare calls split evenly over
the same number of processes) measures the speed-up the machine gives at that moment, and the
step's speed-up is also reported as a fraction of it. ``bare_separate`` (a CRF per map, as IRN
does) is context: what sharing the pairwise terms saves.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common

TARGET_COST = "<= 1.1"
TARGET_SPEEDUP = ">= 0.8"


def write_cams(dataset, ids: list[str], out: Path) -> None:
    """CAM files from the ground truth: each present class's mask, blurred and noised, quantised."""
    from scipy import ndimage

    from esol.inference.cams import quantise, save_cam

    rng = np.random.default_rng(0)
    out.mkdir(parents=True)
    for image_id in ids:
        mask = dataset.mask(image_id)
        keys = np.asarray(dataset.labels(image_id), dtype=np.int64)
        planes = np.zeros((dataset.num_classes - 1, *mask.shape), np.float32)
        for k in keys:
            blurred = ndimage.gaussian_filter((mask == k).astype(np.float32), sigma=mask.shape[0] / 24)
            planes[k - 1] = blurred + rng.uniform(0, 0.15, size=mask.shape)
        save_cam(out / f"{image_id}.npz", keys, quantise(planes, keys))


def bare_arrays(dataset, ids: list[str], cams: Path, cfg) -> list[tuple]:
    """Per image and CRF call: (image, unary, n_labels), exactly what pseudo_label hands pydensecrf."""
    from pydensecrf.utils import unary_from_labels

    from esol.inference.cams import load_cam, seed_labels

    arrays = []
    for image_id in ids:
        image = np.ascontiguousarray(dataset.image(image_id), dtype=np.uint8)
        keys, cam = load_cam(cams / f"{image_id}.npz")
        padded = np.concatenate([[0], keys]).astype(np.uint8)
        to_local = np.zeros(256, dtype=np.int64)
        to_local[padded] = np.arange(len(padded))
        for threshold in (cfg.fg_threshold, cfg.bg_threshold):
            labels = to_local[seed_labels(keys, cam, threshold)]
            unary = unary_from_labels(labels, len(padded), gt_prob=cfg.gt_prob, zero_unsure=False)
            arrays.append((image, np.ascontiguousarray(unary), len(padded)))
    return arrays


def bare_crf(arrays: list[tuple], cfg, shared: bool = True) -> None:
    """The pydensecrf calls alone. ``shared``: the minimum for an image's two maps, pairwise terms
    built once (what esol.refine.crf does); otherwise a CRF of its own per map (the IRN way)."""
    import pydensecrf.densecrf as dcrf

    crf = None
    for index, (image, unary, n) in enumerate(arrays):
        if not shared or index % 2 == 0:
            h, w = image.shape[:2]
            crf = dcrf.DenseCRF2D(w, h, n)
            crf.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
            crf.addPairwiseBilateral(
                sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=image, compat=cfg.bilateral_compat
            )
        crf.setUnaryEnergy(unary)
        crf.inference(cfg.iterations)


_POOL_WORK: tuple = ()  # (arrays, cfg) for the ideal-parallel side, inherited by the forked workers


def _bare_chunk(bounds: tuple[int, int]) -> None:
    arrays, cfg = _POOL_WORK
    bare_crf(arrays[bounds[0] : bounds[1]], cfg)


def ideal_parallel(arrays: list[tuple], cfg, processes: int) -> None:
    """The bare calls split evenly over a fork pool: the parallelism this machine gives right now."""
    global _POOL_WORK
    _POOL_WORK = (arrays, cfg)
    images = len(arrays) // 2
    edges = [2 * round(images * i / processes) for i in range(processes + 1)]
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_bare_chunk, list(itertools.pairwise(edges)), chunksize=1)


def per_image_costs(make_jobs, arrays: list[tuple], cfg, reps: int) -> tuple[float, np.ndarray]:
    """The step's per-image work (``refine_crf._refine_one``: read, seeds, CRF, write) and the bare
    calls of the same image, alternating image by image, REPS times (``make_jobs(rep)``: the jobs,
    writing into a fresh directory: replacing existing files costs the file system more). Returns
    the ratio of the sums of each image's fastest time (contention only adds time) and those times."""
    from esol.steps.refine_crf import _refine_one

    best = np.full((2, len(arrays) // 2), np.inf)
    for rep in range(reps):
        for i, job in enumerate(make_jobs(rep)):
            for side in (0, 1) if (i + rep) % 2 == 0 else (1, 0):
                start = time.perf_counter()
                if side == 0:
                    bare_crf(arrays[2 * i : 2 * i + 2], cfg)
                else:
                    _refine_one(job)
                best[side, i] = min(best[side, i], time.perf_counter() - start)
    return float(best[1].sum() / best[0].sum()), best


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--images", type=int, help="images per side and repetition (default 48, quick 6)")
    ap.add_argument("--cores", type=int, help="processes of the parallel side (default: the cores available)")
    ap.add_argument("--image-size", type=int, help="synthetic image size (default: the config's)")
    args = ap.parse_args(argv)

    from esol.infra.config import params_from_dict
    from esol.steps import refine_crf

    raw = common.params_dict(args.quick, {"synthetic": {"image_size": args.image_size}} if args.image_size else None)
    params = params_from_dict(raw)
    cfg = params.refine_crf
    n = args.images or (6 if args.quick else 48)
    cores = args.cores or common.machine()["cores"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = common.synthetic_dataset(tmp / "data", raw, n)
        ids = dataset.ids("train")
        write_cams(dataset, ids, tmp / "cams")
        arrays = bare_arrays(dataset, ids, tmp / "cams", cfg)
        runs = itertools.count()

        def step(threads: int) -> None:
            out = tmp / f"labels{next(runs)}"
            refine_crf.run(params, data=dataset.root, cams=tmp / "cams", split="train", out_dir=out, threads=threads)

        def make_jobs(rep: int) -> list[tuple]:
            (tmp / f"per_image{rep}").mkdir()
            return refine_crf.refine_jobs(dataset, ids, tmp / "cams", tmp / f"per_image{rep}", cfg)

        per_image, best = per_image_costs(make_jobs, arrays, cfg, common.reps(args) * (1 if args.quick else 3))
        sides = {
            "bare": lambda: bare_crf(arrays, cfg),
            "serial": lambda: step(1),
            "parallel": lambda: step(cores),
            "bare_parallel": lambda: ideal_parallel(arrays, cfg, cores),
            "bare_separate": lambda: bare_crf(arrays, cfg, shared=False),
        }
        times = common.interleaved(sides, common.reps(args), warmup=not args.quick)
        profile = common.profile(lambda: step(1)) if args.profile else None
    cost = common.ratios(times["serial"], times["bare"])
    speedup = common.ratios(times["serial"], times["parallel"])
    per_core = common.stats([s / cores for s in speedup.values])
    ideal = common.ratios(times["bare"], times["bare_parallel"])
    of_ideal = common.stats([s / i for s, i in zip(speedup.values, ideal.values, strict=True)])
    ms = {side: common.stats([1000 * t / n for t in values]) for side, values in times.items()}
    figures = [
        common.Figure(
            "crf.serial_cost_over_bare",
            per_image,
            TARGET_COST,
            detail=f"per image, fastest of the repetitions: step {1000 * best[1].mean():.3g} ms, bare "
            f"{1000 * best[0].mean():.3g} ms; whole serial step over bare, median {cost.median:.3g} "
            f"[{cost.low:.3g}, {cost.high:.3g}]",
        ),
        common.Figure(
            "crf.parallel_speedup_per_core",
            per_core.median,
            TARGET_SPEEDUP,
            detail=f"speed-up {speedup.median:.3g} on {cores} processes, parallel {ms['parallel'].median:.3g} ms/image",
            spread=f"[{per_core.low:.3g}, {per_core.high:.3g}]",
        ),
        common.Figure(
            "crf.parallel_speedup_over_ideal",
            of_ideal.median,
            TARGET_SPEEDUP,
            detail=f"the bare calls split evenly over {cores} processes reach a speed-up of {ideal.median:.3g} "
            "on this machine now (shared cores)",
            spread=f"[{of_ideal.low:.3g}, {of_ideal.high:.3g}]",
        ),
    ]
    extra = {
        "inputs": f"{n} synthetic {raw['synthetic']['image_size']}px images, {cfg.iterations} iterations, "
        f"2 CRF maps per image, {cores} processes (os.cpu_count {os.cpu_count()})",
        **{f"{side} ms/image": value for side, value in ms.items()},
    }
    if profile:
        extra["profile of one serial step"] = "\n" + profile
    common.report("CRF refinement: step vs bare pydensecrf; parallel speed-up", args, figures, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
