"""`esol compare`: the table from `dvc exp show --json`, on made-up data and on a tiny DVC project."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from esol.reporting.compare import collect, table

from .conftest import REPO


def _state(rev, name, threshold, miou, experiments=None):
    return {
        "rev": rev,
        "name": name,
        "data": {
            "params": {"params.yaml": {"data": {"eval_seeds": {"threshold": threshold, "sweep": [0, 1]}, "x": 1}}},
            "metrics": {
                "results/metrics/seeds.json": {"data": {"miou": miou, "best": {"miou": miou + 5}, "curve": [1, 2]}},
                "results/metrics/seeds/cam.json": {"data": {"miou": 1.0}},
            },
        },
        "error": None,
        "experiments": experiments,
    }


def exp_show_json():
    experiments = [
        {"revs": [_state("a" * 40, "thr30", 0.3, 22.5)], "name": "thr30", "executor": None},
        {"revs": [_state("b" * 40, "thr40", 0.4, 27.25)], "name": "thr40", "executor": None},
    ]
    return [_state("workspace", None, 0.25, 20.0), _state("c" * 40, "main", 0.25, 20.0, experiments)]


def test_table_shows_changed_params_and_headline_metrics():
    frame = table(collect(exp_show_json()))
    assert list(frame.columns) == ["main", "thr30", "thr40"]  # the workspace equals its commit: no column
    assert frame.loc["param   eval_seeds.threshold"].tolist() == [0.25, 0.3, 0.4]
    assert "param   x" not in frame.index and "param   eval_seeds.sweep" not in frame.index  # unchanged
    assert frame.loc["metric  seeds.miou"].tolist() == [20.0, 22.5, 27.25]
    assert frame.loc["metric  seeds.best.miou"].tolist() == [25.0, 27.5, 32.25]


def test_table_picks_metrics_by_name_and_names_unknown_ones():
    from esol.reporting.compare import CompareError

    frame = table(collect(exp_show_json()), metrics=["seeds/cam.miou"])
    assert list(frame.index) == ["param   eval_seeds.threshold", "metric  seeds/cam.miou"]
    with pytest.raises(CompareError, match=r"no metric named seeds\.nope; known: .*seeds\.miou"):
        table(collect(exp_show_json()), metrics=["seeds.nope"])
    every = table(collect(exp_show_json()), all_metrics=True)
    assert "metric  seeds.miou" in every.index and "metric  seeds/cam.miou" not in every.index  # unchanged


def test_workspace_that_differs_from_its_commit_gets_a_column():
    states = exp_show_json()
    states[0] = _state("workspace", None, 0.5, 31.0)
    frame = table(collect(states))
    assert list(frame.columns) == ["workspace", "main", "thr30", "thr40"]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def test_compare_two_dvc_experiments_on_a_tiny_project(tmp_path):
    """Two `dvc exp run -S` with one changed param: the table shows the param and both metrics."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("eval_seeds:\n  threshold: 0.25\nother:\n  kept: 1\n")
    (root / "score.py").write_text(
        "import json, os, yaml\n"
        "t = yaml.safe_load(open('params.yaml'))['eval_seeds']['threshold']\n"
        "os.makedirs('results/metrics', exist_ok=True)\n"
        "json.dump({'miou': round(100 * t * t, 3), 'precision': 50.0}, open('results/metrics/seeds.json', 'w'))\n"
    )
    (root / "dvc.yaml").write_text(
        "stages:\n  score:\n    cmd: python score.py\n    deps: [score.py]\n    params: [eval_seeds]\n"
        "    metrics: [results/metrics/seeds.json]\n"
    )
    (root / ".gitignore").write_text("/results/\n/.dvc-site-cache/\n")
    _git(root, "-c", "init.defaultBranch=main", "init", "-q")
    _git(root, "config", "user.email", "test@localhost")
    _git(root, "config", "user.name", "esol tests")
    _dvc(root, "init", "-q")
    _dvc(root, "repro")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "baseline")
    _dvc(root, "exp", "run", "-n", "thr30", "-S", "eval_seeds.threshold=0.3")
    _dvc(root, "exp", "run", "-n", "thr40", "-S", "eval_seeds.threshold=0.4")

    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "esol", "compare", "--csv"], cwd=root, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout), index_col=0)
    assert {"main", "thr30", "thr40"} <= set(frame.columns)
    assert frame.loc["param   eval_seeds.threshold", ["main", "thr30", "thr40"]].tolist() == [0.25, 0.3, 0.4]
    assert frame.loc["metric  seeds.miou", ["main", "thr30", "thr40"]].tolist() == [6.25, 9.0, 16.0]
    assert "param   other.kept" not in frame.index

    pretty = subprocess.run(
        [sys.executable, "-m", "esol", "compare"], cwd=root, capture_output=True, text=True, env=env
    ).stdout
    assert "eval_seeds.threshold" in pretty and "thr30" in pretty and "16" in pretty
    json.loads(_dvc(root, "exp", "show", "--json").stdout)  # what compare reads is plain JSON


def test_compare_outside_a_dvc_project_says_why(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "esol", "compare"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert "esol compare:" in result.stderr and "dvc exp show" in result.stderr
