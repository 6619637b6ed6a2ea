"""``esol show``: print a finished run's headline metrics and its ablation table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from esol.evaluation.not_scored import NOT_SCORED, is_scored
from esol.infra.io import read_json


def headline(metrics_dir: Path) -> pd.DataFrame:
    rows = []
    for stage in ("seeds", "pseudo_labels", "segmentation"):
        path = metrics_dir / f"{stage}.json"
        if path.is_file():
            m = read_json(path)
            if not is_scored(m):
                rows.append({"result": stage, "mIoU": NOT_SCORED, "precision": None, "recall": None})
                continue
            rows.append({"result": stage, "mIoU": m["miou"], "precision": m["precision"], "recall": m["recall"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esol show", description=__doc__)
    parser.add_argument("--metrics-dir", type=Path, default=Path("results/metrics"))
    args = parser.parse_args(argv)
    table = headline(args.metrics_dir)
    if table.empty:
        print(f"no metrics in {args.metrics_dir}: run the pipeline first", file=sys.stderr)
        return 1
    print("Final metrics (percent; seeds and pseudo labels on the train split, segmentation on val)")
    print(table.to_string(index=False))
    ablation = args.metrics_dir / "ablation.csv"
    if ablation.is_file():
        print("\nAblation (seed scores at the configured threshold and at each variant's best):")
        print(pd.read_csv(ablation).to_string(index=False))
    return 0
