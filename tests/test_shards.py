"""Per-image steps split into shards (issue 18): the gathered files are the one job's, byte for byte;
the rules' threads follow --cores; the Slurm profile's plan lists the shard jobs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from esol import cli

from .conftest import smoke_params_dict

SHARDS = 3


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def cam_setup(smoke_dataset, tmp_path):
    """A params file with small CAM batches (6 batches over the 24 train images: 2 per shard) and
    an untrained classifier with non-zero offsets (its samplers read between cells)."""
    from esol.infra.config import params_from_dict
    from esol.training import checkpoint
    from esol.training.classifier import build_model

    raw = smoke_params_dict()
    raw["make_cam"]["batch_size"] = 4
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    torch.manual_seed(0)
    model = build_model(params_from_dict(raw), smoke_dataset)
    with torch.no_grad():
        model.off1.bias.uniform_(-1, 1)
        model.off2.bias.uniform_(-1, 1)
    model_file = tmp_path / "model.pt"
    checkpoint.save(
        model_file, {"model": model.state_dict(), "meta": {"stage": "test", "classes": smoke_dataset.classes}}
    )
    return params_file, model_file


def esol(*args: str | Path) -> None:
    assert cli.main([str(a) for a in args]) == 0


def test_three_shards_of_make_cam_and_refine_crf_gather_to_the_one_job_files(smoke_dataset, cam_setup, tmp_path):
    params_file, model_file = cam_setup
    common = ["--params", params_file, "--data", smoke_dataset.root, "--split", "train"]
    esol("make_cam", *common, "--model", model_file, "--out-dir", tmp_path / "cams", "--threads", "1")
    parts = [tmp_path / "shards" / "cams" / str(k) for k in range(SHARDS)]
    for k, part in enumerate(parts):
        esol("make_cam", *common, "--model", model_file, "--out-dir", part, "--shard", k, "--shards", SHARDS)
    assert all(len(list(part.iterdir())) == 8 for part in parts)  # two batches of four each
    esol("gather_shards", "--params", params_file, "--parts", *parts, "--out-dir", tmp_path / "cams_gathered")
    one_job = files_of(tmp_path / "cams")
    assert len(one_job) == len(smoke_dataset.ids("train"))
    assert files_of(tmp_path / "cams_gathered") == one_job

    crf = [*common, "--cams", tmp_path / "cams", "--variant", "esol", "--threads", "1"]
    esol("refine_crf", *crf, "--out-dir", tmp_path / "labels")
    parts = [tmp_path / "shards" / "labels" / str(k) for k in range(SHARDS)]
    for k, part in enumerate(parts):
        esol("refine_crf", *crf, "--out-dir", part, "--shard", k, "--shards", SHARDS)
    esol("gather_shards", "--params", params_file, "--parts", *parts, "--out-dir", tmp_path / "labels_gathered")
    one_job = files_of(tmp_path / "labels")
    assert len(one_job) == len(smoke_dataset.ids("train"))
    assert files_of(tmp_path / "labels_gathered") == one_job


def test_a_shard_index_out_of_range_is_refused(smoke_dataset, cam_setup, tmp_path, capsys):
    params_file, model_file = cam_setup
    args = [
        "make_cam",
        "--params",
        params_file,
        "--data",
        smoke_dataset.root,
        "--split",
        "train",
        "--model",
        model_file,
    ]
    code = cli.main([str(a) for a in [*args, "--out-dir", tmp_path / "cams", "--shard", "3", "--shards", "3"]])
    assert code == 2
    assert not (tmp_path / "cams").exists()


def test_gathering_refuses_a_file_written_by_two_shards(tmp_path, smoke_params):
    from esol.steps import gather_shards

    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        (tmp_path / part / ".snakemake_timestamp").write_bytes(b"")  # each folder's own: not gathered
        (tmp_path / part / "x.png").write_bytes(b"x")
    with pytest.raises(Exception, match=r"x\.png: written by two shards"):
        gather_shards.run(smoke_params, parts=[tmp_path / "a", tmp_path / "b"], out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plans_scale_threads_with_cores_and_list_the_shard_jobs_on_slurm(tmp_path):
    from .pipeline_project import make_project, run

    raw = smoke_params_dict()
    root = make_project(tmp_path / "esol", raw)
    local = run(root, "snakemake", "-n", "--cores", "8").stdout
    crf_threads = re.findall(r"rule refine_crf:\n(?:    .*\n)*?    threads: (\d+)", local)
    assert crf_threads and all(int(t) == 8 for t in crf_threads), local[-3000:]
    assert "Job stats" in local and "gather_cams" not in local  # one shard: the DAG as before

    raw["make_cam"]["shards"] = raw["refine_crf"]["shards"] = SHARDS
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    slurm = run(root, "snakemake", "-n", "--profile", "workflow/profiles/slurm").stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", slurm[slurm.index("Job stats:") :], re.M))
    assert int(stats["make_cam"]) == 4 * SHARDS and int(stats["gather_cams"]) == 4
    assert int(stats["refine_crf"]) == 2 * SHARDS and int(stats["gather_pseudo_labels"]) == 2
    for k in range(SHARDS):  # (the threads a Slurm job gets are set inside the job, from cpus_per_task)
        for folder in ("cams", "pseudo_labels"):
            pattern = rf"--out-dir results/shards/{folder}/esol/{k} --threads \d+ --shard {k} --shards {SHARDS}\n"
            assert re.search(pattern, slurm), (folder, k)
