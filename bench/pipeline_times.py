"""Whole pipeline: per-step times from Snakemake's ``benchmark:`` files, their total, the run's wall time.

Reads ``<project>/benchmarks/*.tsv`` (one per job: wall ``s``, ``cpu_time``, ``max_rss`` ...) and
prints one row per job in pipeline order, the sum, and the wall time of the latest Snakemake run
(first to last timestamp of its log in ``.snakemake/log/``; jobs overlap on 2 cores, so it is
below the sum). Target: the synthetic default DAG on 2 cores <= 15 minutes of wall time.

    snakemake --cores 2 && python -m bench.pipeline_times          # in the project root
    python -m bench.pipeline_times --project DIR                   # another checkout
"""

from __future__ import annotations

import csv
import re
import sys
from datetime import datetime
from pathlib import Path

from bench import common

TARGET = "<= 900"
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def read_benchmarks(directory: Path) -> list[dict]:
    from esol.steps import STEPS

    rows = []
    for path in sorted(directory.glob("*.tsv")):
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t"))
        if not records:
            continue
        last = records[-1]  # repeated benchmarks (`repeat(...)`) append rows: the latest counts
        step = next((s for s in sorted(STEPS, key=len, reverse=True) if path.stem.startswith(s)), path.stem)
        rows.append(
            {
                "job": path.stem,
                "order": (STEPS.index(step) if step in STEPS else len(STEPS), path.stem),
                "wall_s": float(last["s"]),
                "cpu_s": _number(last.get("cpu_time")),
                "max_rss_mb": _number(last.get("max_rss")),
            }
        )
    return sorted(rows, key=lambda r: r["order"])


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "NA", "-") else None
    except ValueError:
        return None


def run_wall_time(project: Path) -> tuple[float, str] | None:
    """Seconds from the first to the last timestamp of the latest Snakemake log, and its name."""
    logs = sorted((project / ".snakemake" / "log").glob("*.snakemake.log"))
    for log in reversed(logs):
        stamps = [
            datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            for line in log.read_text(errors="replace").splitlines()
            if (m := STAMP.match(line.strip()))
        ]
        if len(stamps) >= 2:
            return (stamps[-1] - stamps[0]).total_seconds(), log.name
    return None


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--project", type=Path, default=Path("."), help="the project root (default: here)")
    args = ap.parse_args(argv)
    rows = read_benchmarks(args.project / "benchmarks")
    if not rows:
        print(f"no benchmark files in {args.project / 'benchmarks'}: run the pipeline first", file=sys.stderr)
        return 1
    width = max(len(r["job"]) for r in rows)
    lines = [f"{'job':<{width}}  {'wall s':>9}  {'cpu s':>9}  {'max RSS MB':>10}"]
    for r in rows:
        cpu = "" if r["cpu_s"] is None else f"{r['cpu_s']:.1f}"
        rss = "" if r["max_rss_mb"] is None else f"{r['max_rss_mb']:.0f}"
        lines.append(f"{r['job']:<{width}}  {r['wall_s']:>9.1f}  {cpu:>9}  {rss:>10}")
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"{'sum of jobs':<{width}}  {total:>9.1f}")
    print("\n".join(lines))
    wall = run_wall_time(args.project)
    extra = {"jobs": len(rows), "sum of job wall times, s": round(total, 1)}
    if wall is not None:
        extra["wall time of the latest run, s"] = f"{wall[0]:.0f} (.snakemake/log/{wall[1]})"
        value, what = wall[0], "wall time of the latest snakemake run"
    else:
        value, what = total, "sum of the jobs' wall times (no snakemake log found)"
    figure = common.Figure("pipeline.wall_s", value, TARGET, detail=what)
    common.report("Whole pipeline: per-step times from benchmarks/*.tsv", args, [figure], **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
