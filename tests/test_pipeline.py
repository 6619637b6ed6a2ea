"""The whole DAG on the smoke configuration, under Snakemake and under DVC (minutes)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from .pipeline_project import run

pytestmark = pytest.mark.slow

CONTRACT = ("seeds", "pseudo_labels", "segmentation")


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


def metrics(root, name):
    return json.loads((root / "results" / "metrics" / f"{name}.json").read_text())


def test_snakemake_writes_the_metrics_contract(project):
    for name in CONTRACT:
        m = metrics(project, name)
        for key in ("miou", "precision", "recall", "per_class"):
            assert key in m, f"{name}.json lacks {key}"
        assert 0 < m["miou"] <= 100
    seeds = metrics(project, "seeds")
    assert {"threshold", "best_threshold", "curve"} <= set(seeds)
    assert len(seeds["curve"]) >= 10
    assert seeds["variant"] == "esol"
    at_best = seeds["errors"]["best"]
    assert at_best["threshold"] == seeds["best_threshold"]
    assert {"part_recall", "body_recall", "context_fp_rate", "background_fp_rate"} <= set(at_best)
    at_configured = seeds["errors"]["threshold"]
    # every object pixel is found, given a wrong class, or missed
    split = seeds["recall"] + at_configured["wrong_class_rate"] + at_configured["missed_rate"]
    assert split == pytest.approx(100, abs=0.05)
    shares = sum(at_best["fp_share_by_distance"].values())
    assert shares == pytest.approx(100, abs=0.1) or shares == 0  # 0: no false positive at all
    table = (project / "results" / "metrics" / "ablation.csv").read_text().splitlines()
    assert table[0].startswith("variant,seed_miou")
    assert "recall_at_cam_precision,precision_at_expansion_recall" in table[0]
    assert [row.split(",")[0] for row in table[1:]] == ["cam", "expansion", "shrinkage", "esol"]
    assert len(list((project / "results/figures/samplers").glob("*.png"))) == 4
    assert "irn_mask_miou,irn_mask_precision,irn_mask_recall" in table[0]
    for variant in ("cam", "esol"):
        irn = metrics(project, f"pseudo_labels/{variant}_irn")
        assert irn["variant"] == f"{variant}_irn" and irn["uncertain_percent"] == 0  # no uncertain band
    assert len(list((project / "results/figures/refinement").glob("*.png"))) == 6
    for log in ("train_cam", "make_cam_esol", "refine_crf_esol", "train_seg_cam", "train_seg_esol"):
        assert (project / "logs" / f"{log}.log").stat().st_size > 0


def test_segmentation_is_scored_against_the_all_background_baseline(project):
    # Whether the net beats the baseline depends on the smoke run's pseudo labels; that the
    # segmentation step itself learns is tested on clean labels in test_segmentation.py.
    seg = metrics(project, "segmentation")
    assert 0 < seg["all_background_miou"] < 100
    assert seg["recall"] > 0


def test_the_ablation_carries_a_segmentation_net_per_variant(project):
    import pandas as pd

    table = pd.read_csv(project / "results" / "metrics" / "ablation.csv").set_index("variant")
    final = metrics(project, "segmentation")
    for variant in ("cam", "esol"):
        seg = json.loads((project / "results/metrics/segmentation" / f"{variant}.json").read_text())
        assert seg["variant"] == variant
        for key in ("miou", "precision", "recall", "miou_single_scale", "miou_crf"):
            assert table.loc[variant, f"seg_{key}"] == seg[key]
    assert table[["seg_miou"]].loc[["expansion", "shrinkage"]].isna().all().all()
    assert final == json.loads((project / "results/metrics/segmentation/esol.json").read_text())
    seg_pt, seg_esol = (project / "results/models" / name for name in ("seg.pt", "seg_esol.pt"))
    assert seg_pt.read_bytes() == seg_esol.read_bytes()
    assert len(list((project / "results/predictions/val_cam").glob("*.png"))) == 24


def test_variants_write_different_cams(project):
    a = (project / "results/cams/cam").glob("*.npz")
    name = sorted(a)[0].name
    assert (project / "results/cams/cam" / name).read_bytes() != (project / "results/cams/esol" / name).read_bytes()


def test_crf_sweep_scores_each_variant_at_each_threshold_pair(project, tmp_path):
    out = tmp_path / "crf_sweep.csv"
    args = ("--root", str(project), "--limit", "4", "--fg", "0.2", "0.3", "--gap", "0.1", "--processes", "1")
    run(project, sys.executable, "-m", "research.crf_sweep", *args, "--out", str(out))
    rows = out.read_text().splitlines()
    assert rows[0] == "variant,fg_threshold,bg_threshold,miou,precision,recall"
    assert sorted(row.split(",")[0] for row in rows[1:]) == ["cam", "cam", "esol", "esol"]
    assert all(0 < float(row.split(",")[3]) <= 100 for row in rows[1:])
    missing = run(project, sys.executable, "-m", "research.crf_sweep", *args, "--variants", "nope", check=False)
    assert missing.returncode == 2 and "no CAMs for nope" in missing.stderr


def test_second_snakemake_run_has_nothing_to_do(project):
    out = run(project, "snakemake", "--cores", "2")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_dvc_repro_gives_the_same_results_and_then_is_a_noop(project):
    before = {name: metrics(project, name) for name in CONTRACT}
    run(project, "dvc", "repro")
    after = {name: metrics(project, name) for name in CONTRACT}
    assert after == before
    again = run(project, "dvc", "repro")
    assert "up to date" in again.stdout
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "dvc repro")


def test_a_dvc_remote_gives_another_clone_the_results_with_nothing_to_recompute(project, tmp_path):
    """README, "Sharing results between users or nodes": commit and push where the pipeline ran,
    pull in another clone, touch, and Snakemake has nothing left to do."""
    remote = tmp_path / "remote"
    run(project, "dvc", "remote", "add", "-d", "shared", str(remote))
    run(project, "dvc", "commit", "-f")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "DVC remote and results")
    run(project, "dvc", "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "results").exists()
    run(clone, "dvc", "pull")
    for name in CONTRACT:  # metrics come from the remote too
        assert metrics(clone, name) == metrics(project, name)
    run(clone, "snakemake", "--touch")
    dry = run(clone, "snakemake", "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_dvc_experiment_reruns_only_shrinkage_and_dependants(project):
    out = run(project, "dvc", "exp", "run", "-S", "train_shrinkage.area_weight=0.9")
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    assert ran == {
        "train_shrinkage-shrinkage",
        "train_shrinkage-esol",
        "make_cam-shrinkage",
        "make_cam-esol",
        "eval_seeds-shrinkage",
        "eval_seeds-esol",
        "refine_crf-esol",
        "eval_pseudo_labels-esol",
        "train_irn-esol",
        "make_sem_seg-esol",
        "eval_irn_masks-esol",
        "plot_refinement",
        "train_seg-esol",
        "eval_seg-esol",
        "final_seg_model",
        "summarize",
        "plot_samplers",
        "make_figures",
    }
    diff = run(project, "dvc", "metrics", "diff", "--json")
    changed = json.loads(diff.stdout)
    assert "results/metrics/seeds/esol.json" in changed
    assert "results/metrics/seeds/cam.json" not in changed
