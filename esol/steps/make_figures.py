"""The report's figures and tables: per-image grids, per-class IoU, threshold and training curves.

Everything here is read from the other steps' outputs (and, for the prediction column of the
grids, the segmentation net run on CPU); matplotlib draws, the VOC palette colours labels.
``snakemake --report report.html`` embeds the files (see ``workflow/rules/report.smk``).
"""

from __future__ import annotations

import dataclasses
import html
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from esol import variants
from esol.data.layout import Dataset
from esol.evaluation.not_scored import NOT_SCORED, is_scored
from esol.infra.config import Params
from esol.infra.io import atomic_dir, read_json, read_label_png, write_text
from esol.reporting.plots import class_legend, colorize, load_cam_image, pyplot, save_png

log = logging.getLogger("esol.make_figures")

OUTPUTS = ("samples", "per_class", "threshold_curve", "training_curves", "tables")

VARIANT_ORDER = variants.NAMES
TRAINING_ORDER = (*variants.TRAINING_RUNS, "train_seg", *(f"train_seg_{v}" for v in variants.NAMES))
STAGE_TITLES = {
    **variants.TRAINING_TITLES,
    "train_seg": "segmentation net",
    **{f"train_seg_{v}": f"segmentation net ({v} labels)" for v in variants.NAMES},
}


def _variant_rank(name: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(name) if name in VARIANT_ORDER else len(VARIANT_ORDER), name)


def sample_predictions(params: Params, dataset: Dataset, model: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """The segmentation net's label maps for ``ids``, computed on CPU (the same ``predict`` as eval_seg)."""
    import torch

    from esol.segmentation.network import build_seg_model, predict
    from esol.training import checkpoint

    # The weights come from MODEL: no ImageNet download for the backbone.
    model_cfg = dataclasses.replace(params.model, pretrained=False)
    net = build_seg_model(params.train_seg, model_cfg, dataset.num_classes)
    checkpoint.load_model_state(net, model)
    net.eval()
    device = torch.device("cpu")
    return {image_id: predict(net, [dataset.image(image_id)], device)[0] for image_id in ids}


def sample_grid(
    path: Path,
    dataset: Dataset,
    image_id: str,
    cam_dirs: list[Path],
    label_dirs: list[Path],
    prediction: np.ndarray | None,
) -> None:
    """One row: image | ground truth | CAM per variant | CRF pseudo label per variant | prediction
    (no ground-truth panel for an image without a mask)."""
    plt = pyplot()
    image = dataset.image(image_id)
    panels: list[tuple[str, np.ndarray, np.ndarray | None]] = [("image", image, None)]
    present: set[int] = set()
    if dataset.has_mask(image_id):
        gt = dataset.mask(image_id)
        panels.append(("ground truth", gt, None))
        present |= set(np.unique(gt).tolist())
    for cam_dir in cam_dirs:
        heat, _ = load_cam_image(cam_dir, image_id)
        panels.append((f"CAM: {cam_dir.name}", image, heat))
    for label_dir in label_dirs:
        label = read_label_png(label_dir / f"{image_id}.png", dataset.num_classes)
        present |= set(np.unique(label).tolist())
        panels.append((f"CRF pseudo label: {label_dir.name}", label, None))
    if prediction is not None:
        present |= set(np.unique(prediction).tolist())
        panels.append(("segmentation", prediction, None))
    n = len(panels)
    fig = plt.figure(figsize=(1.9 * n, 2.55))
    grid = fig.add_gridspec(2, n, height_ratios=[1, 0.13], hspace=0.05, wspace=0.04)
    for i, (title, array, heat) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(colorize(array) if array.ndim == 2 else array, interpolation="nearest")
        if heat is not None:
            ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    class_legend(fig.add_subplot(grid[1, :]), dataset.classes, present)
    names = ", ".join(dataset.classes[k] for k in dataset.labels(image_id))
    fig.suptitle(f"{image_id} ({names})", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.8, bottom=0.02)
    save_png(fig, path)
    plt.close(fig)


def per_class_figure(path: Path, series: dict[str, dict[str, float | None]], classes: list[str]) -> None:
    """Grouped bars: IoU per class (x) for each result (seeds per variant, pseudo labels, segmentation)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(classes) * max(len(series), 1) * 0.35 + 3), 3.8))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(classes))
    cmap = plt.get_cmap("tab10")
    for i, (name, per_class) in enumerate(series.items()):
        values = [np.nan if per_class.get(c) is None else per_class[c] for c in classes]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, color=cmap(i % 10))
    ax.set_xticks(x, classes, rotation=45 if len(classes) > 8 else 0, ha="right" if len(classes) > 8 else "center")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Per-class IoU (seeds and pseudo labels: train split; segmentation: val)")
    if series:
        ax.legend(fontsize=8, ncol=min(len(series), 4), loc="upper right")
    else:
        ax.text(0.5, 0.5, f"{NOT_SCORED}: no image has a ground-truth mask", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def threshold_figure(path: Path, seeds: dict[str, dict]) -> None:
    """Seed mIoU, precision and recall against the background threshold, one line per variant."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True)
    for variant, m in seeds.items():
        curve = pd.DataFrame(m["curve"])
        for ax, metric in zip(axes, ("miou", "precision", "recall"), strict=True):
            (line,) = ax.plot(curve["threshold"], curve[metric], marker=".", label=variant)
            if metric == "miou":
                ax.plot([m["best_threshold"]], [m["best"]["miou"]], "*", ms=12, color=line.get_color())
    threshold = next(iter(seeds.values()))["threshold"] if seeds else None
    for ax, title in zip(axes, ("seed mIoU (%)", "precision (%)", "recall (%)"), strict=True):
        if threshold is not None:
            ax.axvline(threshold, color="grey", ls="--", lw=1)
        ax.set_title(title)
        ax.set_xlabel("background threshold")
        ax.grid(alpha=0.3)
    if seeds:
        axes[0].legend(fontsize=8)
    else:
        axes[1].text(
            0.5, 0.5, f"{NOT_SCORED}: no image has a ground-truth mask", ha="center", transform=axes[1].transAxes
        )
    fig.suptitle("Seeds against the background threshold (dashed: configured; star: best mIoU)", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def read_live(live_dir: Path) -> dict[str, pd.DataFrame]:
    """dvclive's per-metric TSVs (``plots/metrics/train/<name>.tsv``: step, value) by metric name."""
    curves = {}
    for tsv in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        frame = pd.read_csv(tsv, sep="\t")
        if len(frame.columns) >= 2 and len(frame):
            curves[tsv.stem] = frame
    return curves


def training_figure(path: Path, live_dirs: list[Path]) -> None:
    """One panel per training stage: its per-epoch scalars (learning rate on a second axis)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    order = {name: i for i, name in enumerate(TRAINING_ORDER)}
    live_dirs = sorted(live_dirs, key=lambda p: (order.get(p.name, len(order)), p.name))
    cols = min(len(live_dirs), 3) or 1
    rows = max((len(live_dirs) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax, live_dir in zip(axes.flat, live_dirs, strict=False):
        curves = read_live(live_dir)
        for name, frame in curves.items():
            if name == "lr":
                continue
            ax.plot(frame.iloc[:, 0] + 1, frame.iloc[:, 1], marker=".", label=name)
        if "lr" in curves:
            lr_ax = ax.twinx()
            lr = curves["lr"]
            lr_ax.plot(lr.iloc[:, 0] + 1, lr.iloc[:, 1], color="grey", ls=":", marker="x", ms=4, label="lr")
            lr_ax.set_ylabel("learning rate", color="grey", fontsize=8)
            lr_ax.tick_params(labelsize=7, colors="grey")
        ax.set_title(STAGE_TITLES.get(live_dir.name, live_dir.name), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(curves) > 1 or "lr" not in curves:
            ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(live_dirs) :]:
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def _table_html(title: str, frame: pd.DataFrame, note: str = "") -> str:
    body = frame.to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="–", border=0, classes="metrics")
    note_html = f"<p>{html.escape(note)}</p>" if note else ""
    return f"<h2>{html.escape(title)}</h2>{note_html}{body}"


TABLE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1e293b; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.6em; }
p { font-size: 0.85em; color: #475569; max-width: 60em; }
table.metrics { border-collapse: collapse; font-size: 0.85em; }
table.metrics th, table.metrics td { padding: 0.25em 0.8em; border-bottom: 1px solid #cbd5e1; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead th { background: #f1f5f9; }
"""


def tables_html(
    seeds: dict[str, dict], pseudo: dict[str, dict], segmentation: dict, ablation: pd.DataFrame | None
) -> str:
    """The metrics tables as one self-contained HTML page."""
    seed_rows = [
        {"variant": v, "status": NOT_SCORED, "reason": m.get("reason")}
        if not is_scored(m)
        else {
            "variant": v,
            "mIoU": m["miou"],
            "precision": m["precision"],
            "recall": m["recall"],
            "threshold": m["threshold"],
            "best threshold": m["best_threshold"],
            "best mIoU": m["best"]["miou"],
        }
        for v, m in seeds.items()
    ]
    pseudo_rows = [
        {"variant": v, "status": NOT_SCORED, "reason": m.get("reason")}
        if not is_scored(m)
        else {
            "variant": v,
            "mIoU": m["miou"],
            "precision": m["precision"],
            "recall": m["recall"],
            "uncertain %": m.get("uncertain_percent"),
            "mIoU (certain)": m.get("miou_certain"),
        }
        for v, m in pseudo.items()
    ]
    seg = pd.DataFrame(
        [
            {
                "mIoU": segmentation["miou"],
                "precision": segmentation["precision"],
                "recall": segmentation["recall"],
                "pixel accuracy": segmentation.get("pixel_accuracy"),
                "all-background mIoU": segmentation.get("all_background_miou"),
            }
            if is_scored(segmentation)
            else {"status": NOT_SCORED, "reason": segmentation.get("reason")}
        ]
    )
    per_class = pd.DataFrame(
        {
            **{f"seeds: {v}": m["per_class"] for v, m in seeds.items() if is_scored(m)},
            **{f"pseudo labels: {v}": m["per_class"] for v, m in pseudo.items() if is_scored(m)},
            **({"segmentation": segmentation["per_class"]} if is_scored(segmentation) else {}),
        }
    )
    per_class.index.name = "class"
    parts = [
        "<h1>ESOL metrics (percent)</h1>",
        _table_html(
            "Seeds (thresholded CAMs), train split",
            pd.DataFrame(seed_rows),
            "mIoU, precision and recall at the configured background threshold; best: the sweep's best mIoU.",
        ),
        _table_html(
            "CRF pseudo labels, train split",
            pd.DataFrame(pseudo_rows),
            "Uncertain pixels scored as background; '(certain)' ignores them.",
        ),
        _table_html("Segmentation, val split", seg, "All-background mIoU: a net that predicts background only."),
        _table_html("Per-class IoU", per_class.reset_index()),
    ]
    if ablation is not None:
        parts.append(_table_html("Ablation (results/metrics/ablation.csv)", ablation))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>ESOL metrics</title>"
        f"<style>{TABLE_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def run(
    params: Params,
    *,
    data: Path,
    cams: list[Path],
    pseudo_labels: list[Path],
    seg_model: Path,
    seeds: list[Path],
    pseudo_label_metrics: list[Path],
    segmentation: Path,
    live: list[Path],
    samples: Path,
    per_class: Path,
    threshold_curve: Path,
    training_curves: Path,
    tables: Path,
    ablation: Path | None = None,
    count: int = 6,
) -> dict:
    """Draw the report's figures and tables (per-image grids, per-class IoU bars, seed threshold
    and training curves, metrics tables) from the other steps' outputs.

    Inputs: DATA (the dataset), CAMS (one CAM directory per variant, ``results/cams/<variant>``),
    PSEUDO_LABELS (CRF pseudo-label directories), SEG_MODEL (the segmentation net), SEEDS and
    PSEUDO_LABEL_METRICS (per-variant metrics JSON), SEGMENTATION (its metrics JSON), LIVE
    (dvclive directories of the training stages) and, optionally, ABLATION (CSV).

    Outputs:
      SAMPLES          directory, one PNG per image for the first COUNT images of the ``train``
                       split: image | ground truth | CAM per variant | CRF pseudo label | segmentation
                       (without a mask: no ground truth; its metrics files then say "not scored")
      PER_CLASS        PNG, per-class IoU bars of seeds, pseudo labels and segmentation
      THRESHOLD_CURVE  PNG, seed mIoU / precision / recall against the background threshold
      TRAINING_CURVES  PNG, per-epoch losses of every training stage
      TABLES           HTML, the metrics tables (seeds, pseudo labels, segmentation, per class, ablation)
    """
    plt = pyplot()
    dataset = Dataset(data)
    cam_dirs = sorted(cams, key=lambda p: _variant_rank(p.name))
    label_dirs = sorted(pseudo_labels, key=lambda p: _variant_rank(p.name))
    ids = dataset.ids("train")[:count]
    predictions = sample_predictions(params, dataset, seg_model, ids)
    with atomic_dir(samples) as partial:
        for image_id in ids:
            sample_grid(partial / f"{image_id}.png", dataset, image_id, cam_dirs, label_dirs, predictions[image_id])

    seed_metrics = {m["variant"]: m for m in map(read_json, seeds)}
    seed_metrics = dict(sorted(seed_metrics.items(), key=lambda kv: _variant_rank(kv[0])))
    pseudo_metrics = {m["variant"]: m for m in map(read_json, pseudo_label_metrics)}
    pseudo_metrics = dict(sorted(pseudo_metrics.items(), key=lambda kv: _variant_rank(kv[0])))
    seg_metrics = read_json(segmentation)

    # Without masks (a folder dataset) the scoring steps wrote "not scored": drawn as empty figures.
    series = {
        **{f"seeds: {v}": m["per_class"] for v, m in seed_metrics.items() if is_scored(m)},
        **{f"pseudo labels: {v}": m["per_class"] for v, m in pseudo_metrics.items() if is_scored(m)},
        **({"segmentation (val)": seg_metrics["per_class"]} if is_scored(seg_metrics) else {}),
    }
    per_class_figure(per_class, series, dataset.classes)
    threshold_figure(threshold_curve, {v: m for v, m in seed_metrics.items() if is_scored(m)})
    training_figure(training_curves, list(live))
    table = pd.read_csv(ablation) if ablation is not None and ablation.is_file() else None
    write_text(tables, tables_html(seed_metrics, pseudo_metrics, seg_metrics, table))
    plt.close("all")
    log.info(
        "%d sample grids in %s; figures %s, %s, %s; tables %s",
        len(ids),
        samples,
        per_class,
        threshold_curve,
        training_curves,
        tables,
    )
    return {"samples": ids}
