"""Pseudo-label quality over a grid of CRF confidence thresholds, per variant.

    python -m esol.crf_sweep --variants cam esol --fg 0.15 0.2 0.3 0.4 --gap 0.1 0.15

Reads the CAM files of a finished run (``results/cams/<variant>``), refines the ``train`` split
with ``refine_crf``'s settings from params.yaml except the two thresholds, and scores the labels as
``eval_pseudo_labels`` does (uncertain pixels count as background). Writes one row per variant and
threshold pair to ``results/study/crf_sweep.csv``. It answers whether a difference between
variants' pseudo labels comes from the thresholds rather than from the maps. Not a pipeline step:
choosing thresholds on ground truth is a research decision, made once, in params.yaml.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from esol.cams import load_cam
from esol.config import RefineCrfConfig, load_params
from esol.crf import pseudo_label
from esol.data.layout import Dataset
from esol.io import IGNORE_LABEL, atomic_path
from esol.metrics import confusion, scores
from esol.progress import tqdm


def _score_one(job: tuple[Dataset, str, Path, list[RefineCrfConfig]]) -> list[np.ndarray]:
    dataset, image_id, cam_path, configs = job
    keys, cam = load_cam(cam_path)
    image, gt = dataset.image(image_id), dataset.mask(image_id)
    k = dataset.num_classes
    out = []
    for cfg in configs:
        label = pseudo_label(image, keys, cam, cfg)
        out.append(confusion(gt, np.where(label == IGNORE_LABEL, 0, label), k))
    return out


def sweep(
    root: Path, variants: list[str], pairs: list[tuple[float, float]], processes: int, limit: int | None = None
) -> pd.DataFrame:
    """Pseudo-label mIoU / precision / recall of each variant at each (fg, bg) threshold pair."""
    params = load_params(root / "params.yaml")
    dataset = Dataset(root / "data" / "dataset")
    ids = dataset.ids("train")[:limit]
    configs = [dataclasses.replace(params.refine_crf, fg_threshold=fg, bg_threshold=bg) for fg, bg in pairs]
    rows = []
    for variant in variants:
        cams = root / "results" / "cams" / variant
        jobs = [(dataset, i, cams / f"{i}.npz", configs) for i in ids]
        totals = [np.zeros((dataset.num_classes,) * 2, dtype=np.int64) for _ in configs]
        with mp.get_context("fork").Pool(processes) as pool:
            for confusions in tqdm(pool.imap_unordered(_score_one, jobs, chunksize=8), total=len(jobs), desc=variant):
                for total, conf in zip(totals, confusions, strict=True):
                    total += conf
        for (fg, bg), total in zip(pairs, totals, strict=True):
            s = scores(total)
            rows.append(
                {
                    "variant": variant,
                    "fg_threshold": fg,
                    "bg_threshold": bg,
                    "miou": s["miou"],
                    "precision": s["precision"],
                    "recall": s["recall"],
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="a project whose CAMs are made")
    parser.add_argument("--variants", nargs="+", default=["cam", "esol"])
    parser.add_argument("--fg", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.3, 0.4])
    parser.add_argument("--gap", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="fg minus bg threshold")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N train images")
    parser.add_argument("--out", type=Path, default=Path("results/study/crf_sweep.csv"))
    args = parser.parse_args(argv)
    pairs = [(fg, round(fg - gap, 3)) for fg in args.fg for gap in args.gap if fg - gap >= 0]
    missing = [v for v in args.variants if not (args.root / "results" / "cams" / v).is_dir()]
    if missing:
        print(f"error: no CAMs for {', '.join(missing)} under {args.root / 'results' / 'cams'}", file=sys.stderr)
        return 2
    table = sweep(args.root, args.variants, pairs, args.processes, args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    pd.set_option("display.width", 200)
    print(table.pivot_table(index=["fg_threshold", "bg_threshold"], columns="variant", values="miou").to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
