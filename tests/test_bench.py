"""The bench scripts (bench/) still run: each once, --quick, on tiny inputs. Timings are never asserted."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from .conftest import REPO

FIGURES = {
    "cam_inference": ["cam_inference.step_over_bare"],
    "training": ["training.loop_over_bare"],
    "crf": ["crf.serial_cost_over_bare", "crf.parallel_speedup_per_core", "crf.parallel_speedup_over_ideal"],
    "confusion": ["evaluation.confusion_over_bincount[96x96_k7]", "evaluation.confusion_over_bincount[500x375_k21]"],
    "storage": ["storage.bytes_over_irn_float32", "storage.seed_miou_delta_points"],
    "eval_seg": ["eval_seg.step_over_bare[configured scales]", "eval_seg.step_over_bare[0.5,1.0,1.5]"],
    "folder": [
        "folder.read_seconds",
        "folder.read_cpu_seconds",
        "folder.read_over_bare",
        "folder.prepare_seconds",
        "folder.read_with_masks_seconds",
    ],
    "irn": ["irn.sem_seg_over_bare_walk", "irn.sem_seg_over_compute"],
}


def figure_lines(text: str) -> dict[str, str]:
    return {
        line.split(":")[0].removeprefix("FIGURE "): line for line in text.splitlines() if line.startswith("FIGURE ")
    }


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_bench_script_runs_and_prints_its_figures(name, capsys):
    module = importlib.import_module(f"bench.{name}")
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    lines = figure_lines(out)
    assert sorted(lines) == sorted(FIGURES[name]), out
    assert "machine:" in out and "command: python -m bench." in out


@pytest.mark.parametrize("name", ["cam_inference", "training"])
def test_gpu_options_without_a_gpu_say_so(name, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the option measures instead")
    module = importlib.import_module(f"bench.{name}")
    assert module.main(["--quick", "--device", "cuda", "--amp", "bf16", "--channels-last"]) == 0
    assert "not measured: no GPU in this session" in capsys.readouterr().out


def test_orchestration_bench_runs():
    # Its own process: it runs snakemake and dvc in a throw-away project copy (placeholder outputs).
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    result = subprocess.run(
        [sys.executable, "-m", "bench.orchestration", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(figure_lines(result.stdout)) == [
        "orchestration.noop_dvc_repro_s",
        "orchestration.noop_snakemake_s",
        "orchestration.param_change_dvc_reruns_off_expected",
        "orchestration.param_change_snakemake_reruns_off_expected",
    ], result.stdout


def test_pipeline_times_reads_benchmark_files(tmp_path, capsys):
    from bench import pipeline_times

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "train_cam.tsv").write_text(
        header + "12.5\t0:00:12\t800\t3800\t450\t570\t0\t7\t40\t11.5\n"
    )
    (tmp_path / "benchmarks" / "make_cam_esol.tsv").write_text(header + "3.25\t0:00:03\t750\t-\t-\t-\t-\t-\t-\t-\n")
    log = tmp_path / ".snakemake" / "log" / "2026-01-01T000000.000000.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("[Thu Jan  1 00:00:01 2026]\nlocalrule train_cam:\n[Thu Jan  1 00:01:41 2026]\nFinished job 1.\n")
    assert pipeline_times.main(["--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:3]]
    assert rows == ["train_cam", "make_cam_esol"]  # pipeline order, not file order
    assert "sum of jobs" in out and "15.8" in out
    assert "FIGURE pipeline.wall_s: 100 " in out


def test_cost_bench_runs_at_a_tiny_size_and_prints_each_side(capsys):
    from bench import cost

    assert cost.main(["--quick", "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    expected = [
        f"cost.esol_over_floor[cpu,{size},{mode}]"
        for size in cost.QUICK_SIZES
        for mode in ("forward", "forward+backward")
    ]
    assert sorted(figure_lines(out)) == sorted(expected), out
    for side in ("esol", "esol_dense", "irn", "floor", "esol_over_irn", "head_share", "esol_dense_over_floor"):
        assert f"{side} " in out, out
