"""The report of the smoke run in headless Chromium, and `esol compare` on two DVC experiments.

Screenshots of the report land in ``$ESOL_TEST_ARTIFACTS`` (default: ``test-artifacts/``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .browser import Browser, ensure_chromium
from .conftest import REPO
from .pipeline_project import env, run

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("ESOL_TEST_ARTIFACTS", REPO / "test-artifacts"))

# In the page: show every image result of the report the way a click does (the report is a
# React app with its results embedded as data: URIs in `results`), and wait for it to load.
SHOW_EVERY_IMAGE = r"""
(async () => {
  const settle = () => new Promise(resolve => setTimeout(resolve, 80));
  const shown = async () => {
    await settle();
    const images = Array.from(document.images);
    await Promise.all(images.map(image => image.decode().catch(() => null)));
    return images.map(image => ({src: image.src.slice(0, 120), width: image.naturalWidth, complete: image.complete}));
  };
  const report = {initial: await shown(), results: {}};
  for (const [path, result] of Object.entries(results)) {
    if (!result.mime_type.startsWith("image/")) continue;
    app.setView({content: "img", contentPath: result.data_uri, resultPath: path});
    const images = await shown();
    report.results[path] = {
      images,
      displayed: Array.from(document.images).some(image => image.src === result.data_uri && image.naturalWidth > 0),
    };
  }
  return report;
})()
"""
SHOW = 'app.setView({content: "%s", resultPath: "%s", contentPath: results["%s"].data_uri})'


@pytest.fixture(scope="module")
def report(smoke_project, tmp_path_factory):
    root = smoke_project[0]
    path = tmp_path_factory.mktemp("report") / "report.html"
    run(root, "snakemake", "--report", str(path))
    return root, path


def _embedded(html: str) -> dict:
    """The report's ``var results = {...};`` object."""
    match = re.search(r"var results = (\{.*?\});\s*</script>", html, re.S)
    assert match, "no embedded results in the report"
    return json.loads(match.group(1))


def test_report_holds_every_figure_table_and_metrics_file(report):
    root, path = report
    results = _embedded(path.read_text())
    names = set(results)
    for expected in (
        "results/figures/metrics.html",
        "results/figures/per_class_iou.png",
        "results/figures/seed_threshold.png",
        "results/figures/training_curves.png",
        "results/metrics/seeds.json",
        "results/metrics/pseudo_labels.json",
        "results/metrics/segmentation.json",
        "results/metrics/ablation.csv",
    ):
        assert expected in names, f"{expected} is not in the report"
    samples = sorted(p.name for p in (root / "results/figures/samples").glob("*.png"))
    assert len(samples) == 6
    assert {f"results/figures/samples/{name}" for name in samples} <= names
    assert len([n for n in names if n.startswith("results/figures/samplers/")]) == 4
    for name in names:
        assert results[name]["data_uri"].startswith(f"data:{results[name]['mime_type']};"), name
    tables = results["results/figures/metrics.html"]["data_uri"].split("base64,", 1)[1]
    text = base64.b64decode(tables).decode()
    for heading in ("Seeds", "CRF pseudo labels", "Segmentation", "Per-class IoU", "Ablation"):
        assert heading in text


def test_report_renders_in_chromium_and_every_image_loads(report):
    executable = ensure_chromium()
    if executable is None:
        from . import browser

        pytest.skip(browser.MISSING_REASON)
    _, path = report
    images = {name for name, result in _embedded(path.read_text()).items() if result["mime_type"].startswith("image/")}
    assert len(images) == 19  # 3 figures, 6 sample grids, 4 sampler pictures, 6 refinement panels
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Browser(executable) as page:
        page.open(path.as_uri())
        assert page.evaluate("document.title") == "Snakemake Report"
        page.screenshot(ARTIFACTS / "report-home.png")
        shown = page.evaluate(SHOW_EVERY_IMAGE)
        assert shown["initial"] and all(image["width"] > 0 for image in shown["initial"])
        assert set(shown["results"]) == images
        for result, state in shown["results"].items():
            assert state["displayed"], f"{result}: image not displayed"
            broken = [image["src"] for image in state["images"] if not image["complete"] or image["width"] == 0]
            assert not broken, f"{result}: images that did not load: {broken}"

        # The pictures for people: the metrics tables, and one sample grid (for the README).
        tables = "results/figures/metrics.html"
        page.evaluate('app.showCategory("1. Metrics")')
        page.evaluate(SHOW % ("html", tables, tables))
        page.evaluate("new Promise(resolve => setTimeout(resolve, 500))")
        page.screenshot(ARTIFACTS / "report-tables.png")
        grid = sorted(r for r in shown["results"] if r.startswith("results/figures/samples/"))[0]
        page.evaluate('app.showCategory("3. Sample images")')
        page.evaluate(SHOW % ("img", grid, grid))
        page.resize(1400, 420)  # the grid is one row: no need for the blank page around it
        page.evaluate("new Promise(resolve => setTimeout(resolve, 300))")
        page.screenshot(ARTIFACTS / "report.png")
        errors = page.errors()
    assert not errors, "the report logged errors:\n" + "\n".join(errors)
    for name in ("report-home.png", "report-tables.png", "report.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000


@pytest.fixture(scope="module")
def experiment_project(smoke_project, tmp_path_factory):
    """A copy of the smoke project whose results DVC knows, committed: a clean experiment baseline."""
    source = smoke_project[0]
    root = tmp_path_factory.mktemp("experiments") / "esol"
    shutil.copytree(source, root, symlinks=True)
    run(root, "git", "reset", "-q", "--hard")  # earlier tests may have left an experiment applied
    run(root, "dvc", "exp", "remove", "-A")  # ... and experiments of their own: compare only ours
    if (root / "dvc.lock").is_file():
        run(root, "dvc", "checkout", "-f")  # the outputs of the committed dvc.lock
    else:
        run(root, "dvc", "commit", "-f")  # record the Snakemake run's outputs: no rerun
        run(root, "git", "add", "-A")
        run(root, "git", "commit", "-qm", "results of the smoke run, recorded by dvc commit")
    status = run(root, "dvc", "status")
    assert "up to date" in status.stdout, status.stdout
    return root


@pytest.fixture(scope="module")
def experiments(experiment_project):
    """Two DVC experiments with one changed param: the stages each reran and its seed mIoU."""
    root = experiment_project
    ran, seeds = {}, {}
    for name, threshold in (("thr30", 0.3), ("thr40", 0.4)):
        out = run(root, "dvc", "exp", "run", "-n", name, "-S", f"eval_seeds.threshold={threshold}")
        ran[name] = set(re.findall(r"Running stage '([^']+)'", out.stdout))
        seeds[name] = json.loads((root / "results/metrics/seeds.json").read_text())["miou"]
    return root, ran, seeds


def test_a_threshold_experiment_reruns_the_seed_evaluation_only(experiments):
    _, ran, seeds = experiments
    expected = {f"eval_seeds-{v}" for v in ("cam", "expansion", "shrinkage", "esol")} | {"summarize", "make_figures"}
    assert ran["thr30"] == expected and ran["thr40"] == expected
    assert seeds["thr30"] != seeds["thr40"]


def test_compare_shows_the_changed_param_and_both_experiments_metrics(experiments):
    root, _, seeds = experiments
    esol = [sys.executable, "-m", "esol", "compare"]
    variables = {**env(root), "PYTHONPATH": str(REPO)}
    result = subprocess.run([*esol, "--csv"], cwd=root, capture_output=True, text=True, env=variables)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout), index_col=0)
    assert {"thr30", "thr40"} <= set(frame.columns)
    assert frame.loc["param   eval_seeds.threshold", ["thr30", "thr40"]].tolist() == [0.3, 0.4]
    assert frame.loc["metric  seeds.miou", ["thr30", "thr40"]].tolist() == [seeds["thr30"], seeds["thr40"]]
    changed = [i for i in frame.index if i.startswith("param")]
    assert changed == ["param   eval_seeds.threshold"], changed

    table = subprocess.run(esol, cwd=root, capture_output=True, text=True, env=variables)
    assert table.returncode == 0, table.stderr
    assert "eval_seeds.threshold" in table.stdout and "thr30" in table.stdout and "thr40" in table.stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "compare.txt").write_text(table.stdout)


def test_dvc_plots_render_the_training_and_threshold_curves(experiments, tmp_path):
    root = experiments[0]
    shown = json.loads(run(root, "dvc", "plots", "show", "--json").stdout)["data"]
    for name in ("seeds_miou", "seeds_precision", "seeds_recall", "training_loss"):
        assert shown.get(name) and shown[name][0]["type"] == "vega", name
    assert any(key.startswith("results/live/train_cam/plots/metrics/") for key in shown)
    run(root, "dvc", "plots", "diff", "thr30", "thr40", "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").stat().st_size > 1000
    diff = json.loads(run(root, "dvc", "plots", "diff", "thr30", "thr40", "--json").stdout)["data"]
    spec = json.dumps(diff["seeds_miou"])
    assert "thr30" in spec and "thr40" in spec  # a line per experiment
