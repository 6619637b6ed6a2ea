"""The ablation's matched operating points and the seed study's three views of ESOL's claims."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from esol.reporting.ablation import ablation_table, value_at
from research.study import relations


def curve(points):
    return [{"threshold": t, "precision": p, "recall": r, "miou": m} for t, p, r, m in points]


def test_value_at_interpolates_between_sweep_points_and_clamps_at_the_ends():
    c = curve([(0.1, 40.0, 80.0, 30.0), (0.3, 60.0, 60.0, 40.0), (0.5, 80.0, 40.0, 35.0)])
    assert value_at(c, "recall", 70.0, "precision") == pytest.approx(50.0)
    assert value_at(c, "precision", 70.0, "recall") == pytest.approx(50.0)
    assert value_at(c, "recall", 90.0, "precision") == pytest.approx(40.0)  # beyond the sweep: its end


def seeds_file(tmp_path, variant, best, points):
    path = tmp_path / f"{variant}.json"
    threshold, precision, recall, miou = best
    data = {
        "variant": variant,
        "miou": miou,
        "precision": precision,
        "recall": recall,
        "threshold": threshold,
        "best_threshold": threshold,
        "best": {"miou": miou, "precision": precision, "recall": recall},
        "curve": curve(points),
    }
    path.write_text(json.dumps(data))
    return path


def test_ablation_reads_each_variant_at_the_reference_operating_points(tmp_path):
    cam = seeds_file(tmp_path, "cam", (0.3, 60.0, 50.0, 40.0), [(0.1, 40.0, 70.0, 35.0), (0.3, 60.0, 50.0, 40.0)])
    exp = seeds_file(tmp_path, "expansion", (0.3, 50.0, 60.0, 41.0), [(0.1, 40.0, 80.0, 36.0), (0.5, 60.0, 60.0, 41.0)])
    table = ablation_table([cam, exp], []).set_index("variant")
    # expansion at cam's best precision (60) has recall 60 > cam's 50: its curve dominates
    assert table.loc["expansion", "recall_at_cam_precision"] == pytest.approx(60.0)
    assert table.loc["cam", "recall_at_cam_precision"] == pytest.approx(50.0)
    # cam at expansion's best recall (60): halfway between its two points
    assert table.loc["cam", "precision_at_expansion_recall"] == pytest.approx(50.0)


def study_rows(seed, esol_best_precision, esol_matched_precision):
    base = {"miou": 40.0, "precision": 40.0, "recall": 70.0, "best_miou": 45.0, "best_recall": 55.0}
    rows = [
        {
            **base,
            "variant": "cam",
            "best_precision": 55.0,
            "recall_at_cam_precision": 55.0,
            "precision_at_expansion_recall": 54.0,
        },
        {
            **base,
            "variant": "expansion",
            "recall": 71.0,
            "best_precision": 58.0,
            "best_recall": 57.0,
            "recall_at_cam_precision": 58.0,
            "precision_at_expansion_recall": 58.0,
        },
        {
            **base,
            "variant": "shrinkage",
            "best_precision": 56.0,
            "recall_at_cam_precision": 60.0,
            "precision_at_expansion_recall": 60.0,
        },
        {
            **base,
            "variant": "esol",
            "miou": 46.0,
            "precision": 45.0,
            "best_miou": 49.0,
            "best_precision": esol_best_precision,
            "best_recall": 60.0,
            "recall_at_cam_precision": 62.0,
            "precision_at_expansion_recall": esol_matched_precision,
        },
    ]
    return pd.DataFrame([{"seed": seed, **row} for row in rows])


def test_relations_judge_each_view_on_its_own_numbers():
    table = pd.concat([study_rows(0, 61.0, 62.0), study_rows(1, 57.0, 59.0)], ignore_index=True)
    checks = relations(table).set_index(["seed", "threshold"])
    assert checks.loc[(0, "configured"), "esol_minus_cam_miou"] == pytest.approx(6.0)
    assert checks.loc[(0, "best per variant"), "esol_minus_cam_miou"] == pytest.approx(4.0)
    assert math.isnan(checks.loc[(0, "matched operating point"), "esol_minus_cam_miou"])
    # seed 1: esol's best-threshold precision (57) is below expansion's (58), but at expansion's
    # recall its curve is above (59): the two views disagree and both are reported
    assert not checks.loc[(1, "best per variant"), "esol_precision_above_expansion"]
    assert checks.loc[(1, "matched operating point"), "esol_precision_above_expansion"]
    assert checks.loc[(0, "configured"), "expansion_recall_above_cam"]
    assert checks.loc[(1, "matched operating point"), "expansion_recall_above_cam"]


def test_study_configfile_is_an_overlay_passed_to_snakemake_with_the_seed(tmp_path, monkeypatch):
    """--configfile FILE goes, with each seed's dataset.seed, into the seed copy's study.yaml, which
    Snakemake reads through its own --configfile; params.yaml is copied unchanged."""
    from research import study

    from .conftest import REPO

    overlay = tmp_path / "ctx.yaml"
    overlay.write_text("synthetic:\n  context_prob: 0.5\ntrain_shrinkage:\n  epochs: 2\n")
    calls = []

    def fake_snakemake(command, cwd, check):
        calls.append((command, Path(cwd)))
        raise SystemExit("stop after the first seed")

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(study, "subprocess", SimpleNamespace(run=fake_snakemake))
    with pytest.raises(SystemExit, match="stop after"):
        study.main(["--seeds", "4", "--configfile", str(overlay), "--workdir", str(tmp_path / "work")])
    ((command, cwd),) = calls
    assert command[command.index("--configfile") + 1] == "study.yaml" and cwd == tmp_path / "work" / "seed-4"
    # Snakemake's --configfile takes every word after it: the targets must come before it
    assert command[-2:] == ["--configfile", "study.yaml"] and "results/metrics/seeds/esol.json" in command
    assert yaml.safe_load((cwd / "study.yaml").read_text()) == {
        "synthetic": {"context_prob": 0.5},
        "train_shrinkage": {"epochs": 2},
        "dataset": {"seed": 4},
    }
    assert (cwd / "params.yaml").read_text() == (REPO / "params.yaml").read_text()


def test_study_configfile_with_an_unknown_key_fails_before_any_seed_runs(tmp_path, monkeypatch, capsys):
    from research import study

    from .conftest import REPO

    overlay = tmp_path / "typo.yaml"
    overlay.write_text("synthetic:\n  context_prb: 0.5\n")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(study, "subprocess", SimpleNamespace(run=lambda *a, **k: pytest.fail("no seed may run")))
    assert study.main(["--seeds", "0", "--configfile", str(overlay), "--workdir", str(tmp_path / "work")]) == 2
    assert "synthetic.context_prb" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_collect_only_gathers_finished_runs_without_snakemake(tmp_path, monkeypatch):
    from research import study

    def no_snakemake(*args, **kwargs):
        raise AssertionError("--collect-only must not run Snakemake")

    monkeypatch.setattr(study, "subprocess", SimpleNamespace(run=no_snakemake))
    seeds_dir = tmp_path / "work" / "seed-3" / "results" / "metrics" / "seeds"
    seeds_dir.mkdir(parents=True)
    points = [(0.1, 40.0, 70.0, 35.0), (0.3, 60.0, 50.0, 40.0)]
    for variant in ("cam", "expansion", "shrinkage"):
        seeds_file(seeds_dir, variant, (0.3, 60.0, 50.0, 40.0), points)
    args = ["--seeds", "3", "--collect-only", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="no seed metrics for esol"):
        study.main(args)
    assert not (tmp_path / "out").exists()
    seeds_file(seeds_dir, "esol", (0.4, 70.0, 55.0, 46.0), points)
    assert study.main(args) == 0
    assert (tmp_path / "out" / "relations_by_threshold.png").read_bytes().startswith(b"\x89PNG")
    rows = pd.read_csv(tmp_path / "out" / "seeds.csv")
    assert rows["seed"].tolist() == [3, 3, 3, 3]
    assert rows.set_index("variant").loc["esol", "best_miou"] == 46.0


def test_relations_by_threshold_read_every_variant_at_the_same_threshold():
    from research.study import relations_by_threshold

    def sweep(seed, variant, points):
        return [
            {"seed": seed, "variant": variant, "threshold": t, "miou": m, "precision": p, "recall": r}
            for t, m, p, r in points
        ]

    rows = []
    for seed, esol_low in ((0, 46.0), (1, 44.0)):
        rows += sweep(seed, "cam", [(0.2, 40.0, 40.0, 80.0), (0.6, 45.0, 60.0, 55.0)])
        rows += sweep(seed, "expansion", [(0.2, 41.0, 39.0, 79.0), (0.6, 46.0, 58.0, 60.0)])
        rows += sweep(seed, "shrinkage", [(0.2, 45.0, 50.0, 70.0), (0.6, 43.0, 70.0, 40.0)])
        rows += sweep(seed, "esol", [(0.2, esol_low, 49.0, 72.0), (0.6, 44.0, 68.0, 45.0)])
    table = relations_by_threshold(pd.DataFrame(rows)).set_index("threshold")
    low, high = table.loc[0.2], table.loc[0.6]
    assert low["seeds"] == 2
    assert low["esol_minus_cam_miou_mean"] == pytest.approx(5.0)
    assert low["esol_minus_cam_miou_std"] == pytest.approx(math.sqrt(2), abs=0.01)
    assert low["esol_cam_margin_seeds"] == 1  # seed 1 is only +4
    assert low["expansion_recall_above_cam_seeds"] == 0  # expansion's recall is below cam's at 0.2
    assert low["esol_precision_above_expansion_seeds"] == 2
    assert low["all_three_seeds"] == 0
    assert high["expansion_recall_above_cam_seeds"] == 2 and high["esol_minus_cam_miou_mean"] == pytest.approx(-1.0)
    assert high["all_three_seeds"] == 0


def test_product_study_gathers_pseudo_masks_and_segmentation_per_seed(tmp_path, monkeypatch):
    """--through product runs Snakemake to the ablation table (targets before --configfile) and
    gathers the variants that have pseudo masks or a segmentation net, with mean, std and count."""
    from research import study

    from .conftest import REPO

    calls = []

    def fake_snakemake(command, cwd, check):
        calls.append(command)
        seed = int(Path(cwd).name.removeprefix("seed-"))
        table = pd.DataFrame(
            {
                "variant": ["cam", "expansion", "shrinkage", "esol"],
                "seed_miou": [40.0, 45.0, 38.0, 48.0],
                "pseudo_label_miou": [60.0 + seed, None, None, 62.0 + seed],
                "irn_mask_miou": [58.0, None, None, 63.0],
                "seg_miou": [65.0, None, None, 70.0 + 2 * seed],
            }
        )
        (Path(cwd) / "results" / "metrics").mkdir(parents=True)
        table.to_csv(Path(cwd) / study.PRODUCT_TABLE, index=False)

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(study, "subprocess", SimpleNamespace(run=fake_snakemake))
    out = tmp_path / "out"
    args = ["--seeds", "0", "1", "--through", "product", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    assert study.main(args) == 0
    assert all(c[-3:] == ["results/metrics/ablation.csv", "--configfile", "study.yaml"] for c in calls)
    rows = pd.read_csv(out / "product.csv")
    assert rows[["seed", "variant"]].values.tolist() == [[0, "cam"], [0, "esol"], [1, "cam"], [1, "esol"]]
    assert "seed_miou" not in rows.columns
    summary = pd.read_csv(out / "product_summary.csv", header=[0, 1], index_col=0)
    assert summary.loc["esol", ("seg_miou", "mean")] == 71.0
    assert summary.loc["esol", ("seg_miou", "count")] == 2
    assert summary.loc["cam", ("pseudo_label_miou", "mean")] == 60.5
