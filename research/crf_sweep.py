"""Pseudo-label quality over a grid of CRF confidence thresholds, per variant.

    python -m research.crf_sweep --variants cam esol --fg 0.15 0.2 0.3 0.4 --gap 0.1 0.15
    python -m research.crf_sweep --root studies/seed-1 --configfile studies/seed-1/study.yaml --out out.csv

Reads the CAM files of a finished run (``results/cams/<variant>``), refines the ``train`` split
with ``refine_crf``'s settings from the run's params.yaml (with the ``--configfile`` overlay the
run was made with, such as a study seed's ``study.yaml``) except the two thresholds, and scores
the labels as ``eval_pseudo_labels`` does (uncertain pixels count as background). Writes one row per variant and
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
import yaml

from esol.data.layout import Dataset
from esol.evaluation.metrics import confusion, scores
from esol.inference.cams import load_cam
from esol.infra.config import ConfigError, RefineCrfConfig, deep_merge, params_from_dict
from esol.infra.io import IGNORE_LABEL, atomic_path
from esol.infra.progress import tqdm
from esol.refine.crf import pseudo_label


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


def run_params(root: Path, configfile: Path | None = None):
    """The typed params a run in ``root`` was made with: its params.yaml, ``configfile`` merged over."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    if configfile is not None:
        raw = deep_merge(raw, yaml.safe_load(configfile.read_text()) or {})
    return params_from_dict(raw, str(configfile or root / "params.yaml"))


def sweep(
    root: Path,
    variants: list[str],
    pairs: list[tuple[float, float]],
    processes: int,
    limit: int | None = None,
    configfile: Path | None = None,
) -> pd.DataFrame:
    """Pseudo-label mIoU / precision / recall of each variant at each (fg, bg) threshold pair."""
    params = run_params(root, configfile)
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
    parser.add_argument("--configfile", type=Path, metavar="FILE", help="the overlay the run was made with")
    parser.add_argument("--out", type=Path, default=Path("results/study/crf_sweep.csv"))
    args = parser.parse_args(argv)
    pairs = [(fg, round(fg - gap, 3)) for fg in args.fg for gap in args.gap if fg - gap >= 0]
    missing = [v for v in args.variants if not (args.root / "results" / "cams" / v).is_dir()]
    if missing:
        print(f"error: no CAMs for {', '.join(missing)} under {args.root / 'results' / 'cams'}", file=sys.stderr)
        return 2
    try:
        table = sweep(args.root, args.variants, pairs, args.processes, args.limit, args.configfile)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    pd.set_option("display.width", 200)
    print(table.pivot_table(index=["fg_threshold", "bg_threshold"], columns="variant", values="miou").to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
