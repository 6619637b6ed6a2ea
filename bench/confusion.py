"""Evaluation: confusion-matrix throughput of esol.evaluation.metrics.confusion over a bare np.bincount.

Both sides see the same label maps, one call per image as the evaluation steps make them: the
bare side is ``np.bincount`` alone over a flat index array prepared in advance (``k * gt + pred``
for every pixel, in uint16: bincount counts it faster than the same index in intp); the other
side is ``confusion(gt, pred, k)`` on the uint8 maps as they come from the PNGs (255 = ignore in
the ground truth). Two image sizes:
the synthetic default (96 x 96, 7 classes) and VOC-like (500 x 375, 21 classes).
Target: confusion >= 0.5 x bare (pixels/s). The calls take microseconds, so the sides alternate
image by image, and the figure sums each image's fastest call over the repetitions (contention
from other jobs only adds time); the median over repetitions of the per-repetition ratio is
printed beside it.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench import common

TARGET = ">= 0.5"


def label_maps(count: int, h: int, w: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(gt, pred) uint8 pairs: blocky class regions, a 255 band at region borders in gt, pred a
    shifted copy with some blocks relabelled (so every cell of the matrix gets counts)."""
    rng = np.random.default_rng(seed)
    pairs = []
    cell = 8
    for _ in range(count):
        coarse = rng.integers(0, k, size=(-(-h // cell), -(-w // cell)))
        gt = np.kron(coarse, np.ones((cell, cell), dtype=np.int64))[:h, :w].astype(np.uint8)
        border = np.zeros((h, w), bool)
        border[1:] |= gt[1:] != gt[:-1]
        border[:, 1:] |= gt[:, 1:] != gt[:, :-1]
        pred = np.roll(gt, 3, axis=1)
        noise = rng.random(coarse.shape) < 0.2
        pred = np.where(np.kron(noise, np.ones((cell, cell), dtype=bool))[:h, :w], (pred + 1) % k, pred)
        gt = np.where(border, 255, gt).astype(np.uint8)
        pairs.append((gt, pred.astype(np.uint8)))
    return pairs


def measure(pairs, k: int, reps: int) -> tuple[common.Stats, dict, float]:
    """Both sides timed image by image, alternating (the order flips every image), REPS times.

    Returns the per-repetition ratios, the throughputs, and the contention-robust ratio: the sum
    over images of each image's fastest time on each side (a busy machine only ever adds time).
    """
    from esol.evaluation.metrics import confusion

    index = [(k * gt.astype(np.intp).reshape(-1) + pred.reshape(-1)).astype(np.uint16) for gt, pred in pairs]
    clock = time.perf_counter
    best = np.full((2, len(pairs)), np.inf)
    totals = np.zeros((2, reps))
    for rep in range(reps + 1):  # repetition 0 warms up
        for i, ((gt, pred), flat) in enumerate(zip(pairs, index, strict=True)):
            for side in (0, 1) if (i + rep) % 2 == 0 else (1, 0):
                start = clock()
                if side == 0:
                    np.bincount(flat, minlength=k * k)
                else:
                    confusion(gt, pred, k)
                elapsed = clock() - start
                if rep:
                    best[side, i] = min(best[side, i], elapsed)
                    totals[side, rep - 1] += elapsed
    pixels = sum(gt.size for gt, _ in pairs)
    names = ("bare", "confusion")
    throughput = {names[s]: common.stats([pixels / t / 1e6 for t in totals[s]]) for s in (0, 1)}
    return common.ratios(list(totals[0]), list(totals[1])), throughput, float(best[0].sum() / best[1].sum())


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--images", type=int, help="images per size (default 300, quick 10)")
    args = ap.parse_args(argv)
    n = args.images or (10 if args.quick else 300)
    reps = args.reps or (1 if args.quick else 9)
    figures, extra = [], {}
    for label, (h, w, k) in {"96x96_k7": (96, 96, 7), "500x375_k21": (375, 500, 21)}.items():
        count = n if label.startswith("96") else max(n // 10, 2)
        ratio, throughput, robust = measure(label_maps(count, h, w, k), k, reps)
        extra[f"{label} ({count} images) Mpixel/s"] = {side: str(s) for side, s in throughput.items()}
        extra[f"{label} ratio, median of the repetitions"] = str(ratio)
        figures.append(
            common.Figure(
                f"evaluation.confusion_over_bincount[{label}]",
                robust,
                TARGET,
                detail=f"from each image's fastest call; median of the repetitions {ratio.median:.3g}, "
                f"confusion {throughput['confusion'].median:.3g} Mpx/s, bincount {throughput['bare'].median:.3g} Mpx/s",
                spread=f"[{ratio.low:.3g}, {ratio.high:.3g}]",
            )
        )
    common.report("Evaluation: confusion matrix vs bare np.bincount", args, figures, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
