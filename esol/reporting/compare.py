"""``esol compare``: what did my param change do? Metrics and changed params, side by side.

Reads ``dvc exp show --json`` and prints one column per DVC experiment or git revision (the
workspace when it differs from its commit, each baseline commit, each experiment), and one row
per param that differs between them, then the headline metrics::

    dvc exp run -S eval_seeds.threshold=0.3
    dvc exp run -S eval_seeds.threshold=0.4
    esol compare                     # HEAD and its experiments
    esol compare main issue8 -n 3    # these revisions (and their experiments), 3 commits each

Metrics of other revisions come from the DVC cache (``results/`` is git-ignored): run
``dvc pull`` first for revisions produced elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

METRICS_DIR = "results/metrics/"
# The headline metrics, as `<file under results/metrics, no .json>.<key>`.
HEADLINE = (
    "seeds.miou",
    "seeds.precision",
    "seeds.recall",
    "seeds.best_threshold",
    "seeds.best.miou",
    "pseudo_labels.miou",
    "segmentation.miou",
)


class CompareError(RuntimeError):
    pass


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``a.b.c`` keys; lists are kept whole (a curve is not a param or a score)."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def _metric_prefix(path: str) -> str:
    name = path.removeprefix(METRICS_DIR)
    return name.rsplit(".", 1)[0] if name.endswith((".json", ".yaml", ".yml", ".toml")) else name


def _row(state: dict, label: str, kind: str) -> dict[str, Any]:
    data = state.get("data") or {}
    row: dict[str, Any] = {"_label": label, "_kind": kind, "_rev": state.get("rev", "")}
    for path, result in (data.get("params") or {}).items():
        prefix = "" if path == "params.yaml" else f"{path}:"
        for key, value in flatten(result.get("data") or {}).items():
            row[f"param {prefix}{key}"] = value
    for path, result in (data.get("metrics") or {}).items():
        for key, value in flatten(result.get("data") or {}).items():
            row[f"metric {_metric_prefix(path)}.{key}"] = value
    return row


def collect(exp_show: list[dict]) -> list[dict[str, Any]]:
    """Rows (one per workspace, baseline commit and experiment) from ``dvc exp show --json``."""
    rows = []
    for state in exp_show:
        rev = state.get("rev", "")
        if state.get("error") and not state.get("data"):
            continue
        if rev == "workspace":
            label, kind = "workspace", "workspace"
        else:
            label, kind = state.get("name") or rev[:7], "baseline"
        rows.append(_row(state, label, kind))
        for exp_range in state.get("experiments") or []:
            tip = (exp_range.get("revs") or [None])[0]
            if not tip or not tip.get("data"):
                continue
            name = exp_range.get("name") or tip.get("name") or tip.get("rev", "")[:7]
            rows.append(_row(tip, name, "experiment"))
    return rows


def _differs(values: list[Any]) -> bool:
    seen = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return len(seen) > 1


def _display(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def table(rows: list[dict[str, Any]], metrics: list[str] | None = None, all_metrics: bool = False) -> pd.DataFrame:
    """Changed params, then metrics: one row each, one column per workspace/commit/experiment.

    ``metrics``: metric names (``seeds.miou``) to show instead of the headline ones;
    ``all_metrics``: every scalar metric that differs between the columns.
    """
    if not rows:
        return pd.DataFrame()
    # The workspace is worth a column only when it differs from its commit.
    if len(rows) > 1 and rows[0]["_kind"] == "workspace" and rows[1]["_kind"] == "baseline":
        strip = {k: v for k, v in rows[0].items() if not k.startswith("_")}
        if strip == {k: v for k, v in rows[1].items() if not k.startswith("_")}:
            rows = rows[1:]
    keys = list(dict.fromkeys(k for row in rows for k in row if not k.startswith("_")))
    params = [k for k in keys if k.startswith("param ") and _differs([row.get(k) for row in rows])]
    if all_metrics:
        wanted = [
            k
            for k in keys
            if k.startswith("metric ")
            and not isinstance(next((row[k] for row in rows if k in row), None), list | dict)
            and _differs([row.get(k) for row in rows])
        ]
    else:
        names = metrics or list(HEADLINE)
        wanted = [f"metric {name}" for name in names if f"metric {name}" in keys]
        missing = [name for name in (metrics or []) if f"metric {name}" not in keys]
        if missing:
            known = sorted(k.removeprefix("metric ") for k in keys if k.startswith("metric "))
            raise CompareError(f"no metric named {', '.join(missing)}; known: {', '.join(known)}")
    labels = _unique([row["_label"] for row in rows])
    frame = pd.DataFrame(
        {label: [_display(row.get(k)) for k in params + wanted] for label, row in zip(labels, rows, strict=True)},
        index=[k.removeprefix("param ").removeprefix("metric ") for k in params + wanted],
    )
    frame.index = pd.Index(
        [f"{'param' if i < len(params) else 'metric':<6}  {name}" for i, name in enumerate(frame.index)], name=None
    )
    return frame


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def dvc_exp_show(revs: list[str], num: int | None, all_commits: bool, cwd: Path | None = None) -> list[dict]:
    """``dvc exp show --json`` for these revisions (default: HEAD), parsed."""
    command = [_dvc(), "exp", "show", "--json"]
    for rev in revs:
        command += ["--rev", rev]
    if num is not None:
        command += ["-n", str(num)]
    if all_commits:
        command.append("--all-commits")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        shown = " ".join(["dvc", *command[1:]])
        raise CompareError(f"`{shown}` failed:\n{result.stderr.strip() or result.stdout.strip()}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise CompareError(f"`dvc exp show --json` printed no JSON ({exc}): {result.stdout[:500]}") from exc


def _dvc() -> str:
    """The dvc of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else "dvc"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="esol compare")
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("revs", nargs="*", metavar="REV", help="git revisions to compare (default: HEAD)")
    parser.add_argument("-n", "--num", type=int, help="also the N-1 commits before each REV")
    parser.add_argument("-A", "--all-commits", action="store_true", help="every commit and its experiments")
    parser.add_argument(
        "-m",
        "--metric",
        action="append",
        dest="metrics",
        metavar="NAME",
        help="metric to show, as FILE.KEY under results/metrics (e.g. seeds.miou, seeds/cam.recall); "
        f"repeatable; default: {', '.join(HEADLINE)}",
    )
    parser.add_argument("--all-metrics", action="store_true", help="every scalar metric that differs")
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    return parser


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = args or build_parser().parse_args(argv)
    try:
        rows = collect(dvc_exp_show(args.revs, args.num, args.all_commits))
        frame = table(rows, args.metrics, args.all_metrics)
    except CompareError as exc:
        print(f"esol compare: {exc}", file=sys.stderr)
        return 2
    if frame.empty:
        print("esol compare: nothing to compare (no metrics or params found)", file=sys.stderr)
        return 1
    if args.csv:
        print(frame.to_csv(), end="")
        return 0
    if frame.columns.size == 1:
        print("(one revision, no experiments: run `dvc exp run -S section.key=value` to compare)\n")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 40):
        print(frame.to_string(na_rep="–", float_format=lambda v: f"{v:.4g}"))
    return 0
