"""Seed study: the ablation on several dataset seeds, reported as mean and spread.

    esol study --seeds 0 1 2 --cores 2
    esol study --seeds 0 1 --configfile ctx50.yaml --workdir studies-ctx50 --out results/study-ctx50
    esol study --seeds 0 1 2 --collect-only      # re-gather finished runs (e.g. after re-scoring)
    esol study --seeds 0 1 2 3 --through product --out results/study-product   # + pseudo masks, segmentation

``--configfile FILE`` is a YAML overlay merged over params.yaml (``synthetic: {context_prob: 0.5}``),
the same file Snakemake's ``--configfile`` takes. Each seed runs in its own copy of the project
under ``studies/seed-<n>/`` (Snakemake, with the overlay and ``dataset.seed`` set to the seed in
``studies/seed-<n>/study.yaml``) up to the per-variant seed metrics; the rows are gathered into
``results/study/seeds.csv`` and the mean and standard deviation per variant into
``results/study/summary.csv``, with the three ESOL relations counted per seed (``relations.csv``)
and, with every variant read at the same threshold, for each threshold of the sweep
(``relations_by_threshold.csv``).

``--through product`` runs each seed's whole DAG up to the ablation table
(``results/metrics/ablation.csv``: the CRF and IRN pseudo masks and the segmentation net of each
variant in ``train_seg.variants``, trained on the refinement ``train_seg.refinement`` names) and
gathers it into ``product.csv`` (one row per seed and variant) and ``product_summary.csv``.
A second study over the same ``--workdir`` with an overlay that changes only a later step (e.g.
``train_seg: {refinement: irn}``) reruns only that step and what follows it; give it its own ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from esol.infra.config import ConfigError, deep_merge, effective
from esol.infra.io import atomic_path, read_json
from esol.reporting.ablation import ablation_table
from esol.reporting.plots import pyplot, save_png
from esol.variants import NAMES as VARIANTS

PROJECT_FILES = ("Snakefile", "params.yaml", "workflow", "config")
SEED_CONFIG = "study.yaml"  # in each seed's copy: the overlay with the seed, passed to --configfile


def read_overlay(path: Path | None, params: Path = Path("params.yaml")) -> dict:
    """The ``--configfile`` overlay (empty without one), checked merged over ``params``: a bad
    key fails here, named, before any seed runs."""
    if path is None:
        return {}
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        overlay = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(overlay, dict):
        raise ConfigError(f"{path}: expected a mapping of params.yaml sections")
    effective(deep_merge(yaml.safe_load(params.read_text()), overlay), str(path))
    return overlay


SEED_TARGETS = tuple(f"results/metrics/seeds/{variant}.json" for variant in VARIANTS)
PRODUCT_TABLE = "results/metrics/ablation.csv"
# Columns of the ablation table the product study keeps: the pseudo masks and the segmentation net.
PRODUCT_COLUMNS = (
    "pseudo_label_miou",
    "pseudo_label_precision",
    "pseudo_label_recall",
    "irn_mask_miou",
    "irn_mask_precision",
    "irn_mask_recall",
    "seg_miou",
    "seg_precision",
    "seg_recall",
    "seg_miou_single_scale",
    "seg_miou_crf",
)


def prepare_seed(seed: int, root: Path, overlay: dict | None = None) -> None:
    """Copy the project into ``root`` with ``overlay`` and ``dataset.seed`` in its study.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = Path(name)
        target = root / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    seed_config = deep_merge(overlay or {}, {"dataset": {"seed": seed}})
    (root / SEED_CONFIG).write_text(yaml.safe_dump(seed_config, sort_keys=False))


def run_snakemake(root: Path, cores: int, targets: tuple[str, ...]) -> None:
    """Run Snakemake in a seed's copy ``root`` up to ``targets``, with its study.yaml."""
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), *targets, "--configfile", SEED_CONFIG]
    subprocess.run(command, cwd=root, check=True)


def run_seed(seed: int, root: Path, cores: int, overlay: dict | None = None) -> pd.DataFrame:
    """Run the variants' seed evaluation for one dataset seed, with ``overlay`` merged over
    params.yaml; return one row per variant."""
    prepare_seed(seed, root, overlay)
    run_snakemake(root, cores, SEED_TARGETS)
    return collect_seed(seed, root)


def collect_product(seed: int, root: Path) -> pd.DataFrame:
    """The pseudo-mask and segmentation columns of one seed's finished ablation table in ``root``:
    one row per variant that has any of them."""
    path = root / PRODUCT_TABLE
    if not path.is_file():
        raise SystemExit(f"error: {path}: no ablation table (run the study with --through product first)")
    table = pd.read_csv(path)
    columns = [c for c in PRODUCT_COLUMNS if c in table.columns]
    table = table.loc[table[columns].notna().any(axis=1), ["variant", *columns]]
    table.insert(0, "seed", seed)
    return table.reset_index(drop=True)


def product_study(args: argparse.Namespace, overlay: dict) -> int:
    """``--through product``: each seed's DAG up to the ablation table, gathered into product.csv
    and product_summary.csv (mean, std and count over the seeds per variant)."""
    runs = []
    for seed in args.seeds:
        root = args.workdir / f"seed-{seed}"
        if not args.collect_only:
            prepare_seed(seed, root, overlay)
            run_snakemake(root, args.cores, (PRODUCT_TABLE,))
        runs.append(collect_product(seed, root))
    table = pd.concat(runs, ignore_index=True)
    summary = table.drop(columns="seed").groupby("variant", sort=False).agg(["mean", "std", "count"]).round(2)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame, index in (("product.csv", table, False), ("product_summary.csv", summary, True)):
        with atomic_path(args.out / name) as tmp:
            frame.to_csv(tmp, index=index)
    pd.set_option("display.width", 200)
    print(summary.to_string())
    return 0


def collect_seed(seed: int, root: Path) -> pd.DataFrame:
    """The rows of one seed's finished run in ``root``: one per variant."""
    seeds_dir = root / "results" / "metrics" / "seeds"
    missing = [v for v in VARIANTS if not (seeds_dir / f"{v}.json").is_file()]
    if missing:
        raise SystemExit(f"error: {seeds_dir}: no seed metrics for {', '.join(missing)} (run the study first)")
    table = ablation_table([seeds_dir / f"{variant}.json" for variant in VARIANTS], [])
    table = table.drop(columns=["pseudo_label_miou", "threshold"])
    table = table.rename(columns=lambda column: column.replace("seed_", ""))
    table.insert(0, "seed", seed)
    return table


def collect_curves(seed: int, root: Path) -> pd.DataFrame:
    """The threshold sweeps of one seed's finished run: one row per variant and threshold."""
    seeds_dir = root / "results" / "metrics" / "seeds"
    rows = [
        {"seed": seed, "variant": variant, **point}
        for variant in VARIANTS
        for point in read_json(seeds_dir / f"{variant}.json")["curve"]
    ]
    return pd.DataFrame(rows)


def relations_by_threshold(curves: pd.DataFrame, margin: float = 5.0) -> pd.DataFrame:
    """The three claims with all variants read at one common threshold, for each threshold of
    the sweep: mean and standard deviation over the seeds of esol - cam mIoU, expansion - cam
    recall and esol - expansion precision, and on how many seeds each claim holds (esol at
    least ``margin`` points above cam) and all three together."""
    wide = curves.assign(threshold=curves["threshold"].round(6)).pivot_table(
        index=["threshold", "seed"], columns="variant", values=["miou", "precision", "recall"]
    )
    diffs = pd.DataFrame(
        {
            "esol_minus_cam_miou": wide[("miou", "esol")] - wide[("miou", "cam")],
            "expansion_minus_cam_recall": wide[("recall", "expansion")] - wide[("recall", "cam")],
            "esol_minus_expansion_precision": wide[("precision", "esol")] - wide[("precision", "expansion")],
        }
    )
    holds = pd.DataFrame(
        {
            "esol_cam_margin_seeds": diffs["esol_minus_cam_miou"] >= margin,
            "expansion_recall_above_cam_seeds": diffs["expansion_minus_cam_recall"] > 0,
            "esol_precision_above_expansion_seeds": diffs["esol_minus_expansion_precision"] > 0,
        }
    )
    holds["all_three_seeds"] = holds.all(axis=1)
    by_threshold = diffs.groupby(level="threshold")
    spread = pd.concat([by_threshold.mean().add_suffix("_mean"), by_threshold.std().add_suffix("_std")], axis=1)
    spread = spread[[f"{name}_{stat}" for name in diffs.columns for stat in ("mean", "std")]]
    out = pd.concat([by_threshold.size().rename("seeds"), spread, holds.groupby(level="threshold").sum()], axis=1)
    return out.round(2).reset_index()


def holding_on_every_seed(by_threshold: pd.DataFrame) -> list[float]:
    """The common thresholds of :func:`relations_by_threshold` where all three claims hold on every seed."""
    return by_threshold.loc[by_threshold["all_three_seeds"] == by_threshold["seeds"], "threshold"].tolist()


def relations_figure(path: Path, by_threshold: pd.DataFrame, margin: float = 5.0) -> None:
    """The three claims against the common threshold: mean ± std over the seeds of each difference,
    the line it must clear, and the thresholds where all three hold on every seed shaded."""
    plt = pyplot()
    panels = (
        ("esol_minus_cam_miou", "esol − cam seed mIoU", margin),
        ("expansion_minus_cam_recall", "expansion − cam recall", 0.0),
        ("esol_minus_expansion_precision", "esol − expansion precision", 0.0),
    )
    seeds = int(by_threshold["seeds"].max())
    every_seed = holding_on_every_seed(by_threshold)
    half_step = by_threshold["threshold"].diff().min() / 2 if len(by_threshold) > 1 else 0.025
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True)
    for ax, (name, title, line) in zip(axes, panels, strict=True):
        t, mean, std = by_threshold["threshold"], by_threshold[f"{name}_mean"], by_threshold[f"{name}_std"]
        ax.plot(t, mean, marker=".")
        ax.fill_between(t, mean - std, mean + std, alpha=0.25)
        ax.axhline(line, color="black", lw=1, ls="--")
        for threshold in every_seed:
            ax.axvspan(threshold - half_step, threshold + half_step, color="tab:green", alpha=0.12, lw=0)
        ax.set_title(f"{title} (points)")
        ax.set_xlabel("common background threshold")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"ESOL's claims over {seeds} seeds, every variant at the same threshold (mean ± std; dashed: what each "
        "must clear; green: all three hold on every seed)",
        fontsize=9,
    )
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def relations(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the three claims at the configured threshold, at each variant's best threshold,
    and at matched operating points of the precision-recall curves (expansion's recall where its
    precision equals cam's best-threshold precision; esol's precision where its recall equals
    expansion's best-threshold recall)."""
    out = []
    for seed, group in table.groupby("seed"):
        v = group.set_index("variant")
        for view, prefix in (("configured", ""), ("best per variant", "best_")):
            out.append(
                {
                    "seed": seed,
                    "threshold": view,
                    "esol_minus_cam_miou": round(v.loc["esol", f"{prefix}miou"] - v.loc["cam", f"{prefix}miou"], 3),
                    "expansion_recall_above_cam": bool(
                        v.loc["expansion", f"{prefix}recall"] > v.loc["cam", f"{prefix}recall"]
                    ),
                    "esol_precision_above_expansion": bool(
                        v.loc["esol", f"{prefix}precision"] > v.loc["expansion", f"{prefix}precision"]
                    ),
                }
            )
        out.append(
            {
                "seed": seed,
                "threshold": "matched operating point",
                "esol_minus_cam_miou": float("nan"),
                "expansion_recall_above_cam": bool(
                    v.loc["expansion", "recall_at_cam_precision"] > v.loc["cam", "best_recall"]
                ),
                "esol_precision_above_expansion": bool(
                    v.loc["esol", "precision_at_expansion_recall"] > v.loc["expansion", "best_precision"]
                ),
            }
        )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="esol study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("studies"))
    parser.add_argument("--out", type=Path, default=Path("results/study"))
    parser.add_argument(
        "--configfile",
        type=Path,
        metavar="FILE",
        help="YAML overlay merged over params.yaml for the study (as snakemake --configfile); "
        "give the study its own --workdir and --out",
    )
    parser.add_argument(
        "--collect-only",
        action="store_true",
        help="gather the seeds' finished runs from --workdir without running Snakemake",
    )
    parser.add_argument(
        "--through",
        choices=("seeds", "product"),
        default="seeds",
        help="seeds: up to the per-variant seed metrics (the three claims); product: the whole DAG up to "
        "the ablation table (pseudo masks of both refinements, the segmentation nets)",
    )
    args = parser.parse_args(argv)
    if args.through == "product":
        try:
            overlay = {} if args.collect_only else read_overlay(args.configfile)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return product_study(args, overlay)
    if args.collect_only:
        runs = [collect_seed(s, args.workdir / f"seed-{s}") for s in args.seeds]
    else:
        try:
            overlay = read_overlay(args.configfile)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        runs = [run_seed(s, args.workdir / f"seed-{s}", args.cores, overlay) for s in args.seeds]
    table = pd.concat(runs, ignore_index=True)
    by_threshold = relations_by_threshold(
        pd.concat([collect_curves(s, args.workdir / f"seed-{s}") for s in args.seeds], ignore_index=True)
    )
    summary = table.drop(columns="seed").groupby("variant", sort=False).agg(["mean", "std"]).round(2)
    checks = relations(table)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame, index in (
        ("seeds.csv", table, False),
        ("summary.csv", summary, True),
        ("relations.csv", checks, False),
        ("relations_by_threshold.csv", by_threshold, False),
    ):
        with atomic_path(args.out / name) as tmp:
            frame.to_csv(tmp, index=index)
    relations_figure(args.out / "relations_by_threshold.png", by_threshold)
    pd.set_option("display.width", 200)
    print(summary.to_string())
    print(checks.to_string(index=False))
    every_seed = holding_on_every_seed(by_threshold)
    print(f"common thresholds where all three claims hold on every seed: {every_seed or 'none'}")
    return 0
