"""Generate ``dvc.yaml`` from the Snakemake workflow, so the two pipelines cannot drift.

Every job of the Snakemake DAG (built for the params on disk) becomes one DVC stage with the
same command (but ``--threads 0``: the machine's CPUs), dependencies, outputs and params
sections. Run ``python -m esol.dvcgen`` (or ``make dvc.yaml``) after changing a rule; a test
fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HEADER = """\
# GENERATED FILE - do not edit. Derived from the Snakefile by `python -m esol.dvcgen`
# (`make dvc.yaml`); tests/test_dvc_yaml.py fails when it is out of date.
# Run with `dvc repro`; compare with `dvc exp run -S section.key=value` and `dvc metrics diff`.
"""


def _snakemake_jobs(workdir: Path) -> list:
    """All jobs of the workflow's DAG in topological order (Snakemake's own DAG builder)."""
    from snakemake.api import DAGSettings, OutputSettings, ResourceSettings, SnakemakeApi
    from snakemake.settings.enums import Quietness

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=2), snakefile=workdir / "Snakefile", workdir=workdir
            )
            dag_api = workflow_api.dag(DAGSettings(forceall=True))
            workflow = dag_api.workflow_api._workflow
            workflow.dag_settings = dag_api.dag_settings
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
            workflow._build_dag()
            return [job for level in workflow.dag.toposorted() for job in sorted(level, key=_job_order)]


def _job_order(job: Any) -> tuple:
    """Within one level of the DAG: pipeline order of the steps, then wildcard values."""
    from esol.steps import STEPS

    rank = STEPS.index(job.rule.name) if job.rule.name in STEPS else len(STEPS)
    return rank, tuple(str(value) for value in job.wildcards)


def _kind(path: str) -> str:
    if path.startswith("results/metrics/") and path.endswith(".json"):
        return "metrics"
    if path.startswith("results/live/"):
        return "plots"
    return "outs"


def _name(job: Any) -> str:
    return job.rule.name + "".join(f"-{value}" for value in job.wildcards)


def _stage(job: Any) -> tuple[str, dict[str, Any]]:
    name = _name(job)
    cmd = " ".join(job.shellcmd.split()).replace(sys.executable, "python")
    # DVC runs one stage at a time: a step with several processes takes every usable CPU.
    cmd = re.sub(r"--threads \d+", "--threads 0", cmd)
    # A dvclive folder is declared to DVC as its plots subfolder (below); depend on that same path.
    deps = sorted(
        dict.fromkeys(f"{p}/plots/metrics" if str(p).startswith("results/live/") else str(p) for p in job.input)
    )
    stage: dict[str, Any] = {"cmd": cmd}
    if deps:
        stage["deps"] = deps
    sections = job.params.get("sections") if hasattr(job.params, "get") else None
    if sections:
        stage["params"] = [*sections, "recipes"]  # a dataset's recipe can override any section
    # Everything is cached, metrics and plots included: results/ is git-ignored, so only the DVC
    # cache can give `dvc exp show`, `dvc metrics diff` and `dvc plots diff` other revisions' values.
    outs, metrics, plots = [], [], []
    for path in (str(p) for p in job.output):
        kind = _kind(path)
        if kind == "metrics":
            metrics.append(path)
        elif kind == "plots":
            plots.append(f"{path}/plots/metrics")  # dvclive's per-metric TSVs
        else:
            outs.append(path)
    for key, values in (("outs", outs), ("metrics", metrics), ("plots", plots)):
        if values:
            stage[key] = values
    return name, stage


def render(workdir: Path = Path(".")) -> str:
    """The dvc.yaml text for the workflow in ``workdir``."""
    workdir = workdir.resolve()
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        jobs = [job for job in _snakemake_jobs(workdir) if job.rule.shellcmd]
    finally:
        os.chdir(cwd)
    stages = dict(_stage(job) for job in jobs)
    document: dict[str, Any] = {"stages": stages}
    plots = _plots(jobs)
    if plots:
        document["plots"] = plots
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=200)


def _plots(jobs: list) -> list[dict[str, Any]]:
    """Top-level plots of `dvc plots show` / `dvc plots diff`, each across variants or stages:
    the seed threshold curves (``results/plots/seeds_curve/<variant>.csv``) and the training
    loss per epoch (dvclive's ``results/live/<stage>/plots/metrics/train/loss.tsv``)."""
    outputs = [str(p) for job in jobs for p in job.output]
    curves = [p for p in outputs if p.startswith("results/plots/seeds_curve/") and p.endswith(".csv")]
    live = [p for p in outputs if p.startswith("results/live/")]
    plots: list[dict[str, Any]] = []
    for metric, name in (("miou", "mIoU"), ("precision", "precision"), ("recall", "recall")):
        if curves:
            plots.append(
                {
                    f"seeds_{metric}": {
                        "title": f"Seeds: {name} against the background threshold",
                        "template": "linear",
                        "x": "threshold",
                        "y": {path: metric for path in curves},
                        "x_label": "background threshold",
                        "y_label": f"seed {name} (%)",
                    }
                }
            )
    if live:
        plots.append(
            {
                "training_loss": {
                    "title": "Training loss per epoch, every stage",
                    "template": "linear",
                    "x": "step",
                    "y": {f"{path}/plots/metrics/train/loss.tsv": "loss" for path in live},
                    "x_label": "epoch (from 0)",
                    "y_label": "loss",
                }
            }
        )
    return plots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--check", action="store_true", help="exit 1 if OUTPUT differs from the generated text")
    args = parser.parse_args(argv)
    text = render(Path("."))
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python -m esol.dvcgen`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
