"""IRN masks: images/s of the make_sem_seg step against a bare random walk on the same tensors,
and the peak memory of one image's walk at VOC size.

Sides, on the same images, CAM files (blurred ground-truth masks) and IRN model (untrained:
weights do not change the cost): ``step`` is ``esol.steps.make_sem_seg.run`` (read image and CAM
file, IRN boundary with its flip, CAMs to the stride-4 grid, walk, upsample, argmax, PNG write);
``bare`` is ``esol.refine.random_walk.random_walk`` alone, on boundary maps and CAM grids
prepared in advance. Target: step images/s >= 0.8 x bare images/s. ``compute`` is the step's
arithmetic without its files: IRN boundary of the image and its mirror, CAMs to the grid, the
walk, on images and CAM planes held in memory (the step over it is the step's own overhead).

Memory: the walk holds the sparse transition matrix (about N x 80 entries at radius 5, N = cells
of the stride-4 grid) and the K score vectors; IRN's dense walk held two N x N float32 matrices
(at VOC size, 500 x 375, a 125 x 94 grid, N = 11,750: 2 x 552 MB). ``--memory`` measures one
whole walk in a fresh process: the growth of the peak resident set over the process before the
walk, on CPU; torch's peak allocation, on CUDA.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

TARGET = ">= 0.8"
VOC_SIZE = (375, 500)  # height, width
VOC_CLASSES = 21


def dense_bytes(height: int, width: int) -> int:
    """Bytes of the two N x N float32 matrices IRN's dense walk of an image holds."""
    n = (-(-height // 4)) * (-(-width // 4))
    return 2 * n * n * 4


def memory_probe(height: int, width: int, classes: int, device: str) -> dict:
    """Peak memory of one image's walk (run in a fresh process by :func:`measure_memory`)."""
    import torch

    from esol.infra.config import params_from_dict
    from esol.refine.affinity import pair_offsets
    from esol.refine.random_walk import grid_size, random_walk, sparse_transition

    cfg = params_from_dict(common.params_dict(False)).make_sem_seg
    h, w = grid_size(height, width)
    gen = torch.Generator().manual_seed(0)
    boundary = (torch.rand(h, w, generator=gen) * 0.2).to(device)
    scores = torch.rand(classes - 1, h, w, generator=gen).to(device)
    pairs = pair_offsets(cfg.radius)
    matrix = sparse_transition(boundary, pairs, cfg.beta)
    parts = (matrix.values(), matrix.col_indices(), matrix.crow_indices())
    sparse_bytes = sum(t.numel() * t.element_size() for t in parts)
    del matrix, parts
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        random_walk(scores, boundary, pairs, cfg.beta, cfg.exp_times)
        torch.cuda.synchronize()
        return {
            "peak_bytes": torch.cuda.max_memory_allocated() - base,
            "seconds": time.perf_counter() - start,
            "exp_times": cfg.exp_times,
            "sparse_bytes": sparse_bytes,
        }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    random_walk(scores, boundary, pairs, cfg.beta, cfg.exp_times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_bytes": peak - before,
        "seconds": time.perf_counter() - start,
        "exp_times": cfg.exp_times,
        "sparse_bytes": sparse_bytes,
    }


def measure_memory(height: int, width: int, classes: int, device: str) -> dict:
    """:func:`memory_probe` in a fresh interpreter (so that earlier work does not raise the peak)."""
    code = f"import json, bench.irn as b; print(json.dumps(b.memory_probe({height}, {width}, {classes}, {device!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=common.REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(root: Path, params, dataset, ids: list[str]):
    """CAM files, an untrained IRN model file, and the bare side's tensors (boundaries, CAM grids)."""
    import torch

    from bench.crf import write_cams
    from esol.data.loaders import normalize
    from esol.inference.cams import load_cam
    from esol.refine.irn import build_irn, predict_boundary
    from esol.refine.random_walk import to_grid
    from esol.training import checkpoint

    cams = root / "cams"
    write_cams(dataset, ids, cams)
    torch.manual_seed(0)
    model = build_irn(params.model, params.train_irn.train_backbone)
    checkpoint.save(root / "irn.pt", {"model": model.state_dict()})
    model.eval()
    tensors, held = [], []
    for image_id in ids:
        _, planes = load_cam(cams / f"{image_id}.npz")
        image = normalize(dataset.image(image_id))
        boundary = predict_boundary(model, image).float()
        tensors.append((to_grid(torch.from_numpy(planes)), boundary))
        held.append((image, torch.from_numpy(planes)))
    return cams, root / "irn.pt", tensors, (model, held)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, help="images per repetition (default 48, quick 2)")
    p.add_argument("--image-size", type=int, help="synthetic image size in px (default: params.yaml's)")
    p.add_argument("--memory", action="store_true", help="also measure one walk's peak memory at VOC size")
    p.add_argument("--memory-size", default="375x500", help="HxW of the memory probe (default: VOC's 375x500)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the memory probe")
    args = p.parse_args(argv)
    import torch

    from esol.infra.config import params_from_dict
    from esol.refine.affinity import pair_offsets
    from esol.refine.irn import predict_boundary
    from esol.refine.random_walk import random_walk, to_grid
    from esol.steps import make_sem_seg

    overrides = {"runtime": {"device": "cpu"}}
    if args.image_size:
        overrides["synthetic"] = {"image_size": args.image_size}
    raw = common.params_dict(args.quick, overrides)
    params = params_from_dict(raw)
    cfg = params.make_sem_seg
    images = args.images or (2 if args.quick else 48)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = common.synthetic_dataset(root / "dataset", raw, images)
        ids = dataset.ids("train")
        cams, model, tensors, (network, held) = prepare(root, params, dataset, ids)
        pairs = pair_offsets(cfg.radius)
        runs = iter(range(10**6))

        def step() -> None:
            make_sem_seg.run(
                params, data=dataset.root, cams=cams, model=model, split="train", out_dir=root / f"m{next(runs)}"
            )

        def bare() -> None:
            for scores, boundary in tensors:
                random_walk(scores, boundary, pairs, cfg.beta, cfg.exp_times)

        def compute() -> None:
            with torch.no_grad():
                for image, planes in held:
                    boundary = predict_boundary(network, image).float()
                    random_walk(to_grid(planes), boundary, pairs, cfg.beta, cfg.exp_times)

        times = common.interleaved({"step": step, "bare": bare, "compute": compute}, common.reps(args))
    ratio = common.ratios(times["bare"], times["step"])
    over_compute = common.ratios(times["compute"], times["step"])
    figures = [
        common.Figure(
            "irn.sem_seg_over_bare_walk",
            round(ratio.median, 3),
            TARGET,
            detail=f"step {images / common.stats(times['step']).median:.1f} img/s vs bare walk "
            f"{images / common.stats(times['bare']).median:.1f} img/s",
            spread=f"[{ratio.low:.3f}, {ratio.high:.3f}]",
        ),
        common.Figure(
            "irn.sem_seg_over_compute",
            round(over_compute.median, 3),
            TARGET,
            detail=f"step {images / common.stats(times['step']).median:.1f} img/s vs boundary + walk in memory "
            f"{images / common.stats(times['compute']).median:.1f} img/s",
            spread=f"[{over_compute.low:.3f}, {over_compute.high:.3f}]",
        ),
    ]
    extra = {
        "images": f"{images} synthetic images of {raw['synthetic']['image_size']} px, torch threads "
        f"{torch.get_num_threads()}; walk radius {cfg.radius}, beta {cfg.beta}, 2^{cfg.exp_times} steps",
        "dense_matrices_at_voc_size": f"{dense_bytes(*VOC_SIZE) / 2**20:.0f} MiB (2 x N^2 float32, N = 125 x 94)",
    }
    if args.memory:
        height, width = (int(v) for v in args.memory_size.split("x"))
        probe = measure_memory(height, width, VOC_CLASSES, args.device)
        extra[f"peak_memory_at_{height}x{width}"] = (
            f"{probe['peak_bytes'] / 2**20:.0f} MiB peak growth on {args.device} (sparse T: "
            f"{probe['sparse_bytes'] / 2**20:.1f} MiB) against {dense_bytes(height, width) / 2**20:.0f} "
            f"MiB of IRN's dense matrices ({probe['seconds']:.1f} s for a walk of 2^{probe['exp_times']} steps)"
        )
    common.report("IRN masks: make_sem_seg vs bare random walk", args, figures, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
