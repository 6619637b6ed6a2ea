"""Several devices per step (esol.infra.distributed), simulated on CPU, and the SLURM profile for real.

The multi-device tests spawn two gloo processes on CPU, each of which imports torch: about 10 s
per launch.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import Dataset as TorchDataset

from esol.infra import distributed
from esol.infra.config import ConfigError
from esol.infra.runtime import Runtime
from esol.training import checkpoint
from esol.training.loop import EpochPermutation, TrainSpec, train

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


# --------------------------------------------------------------------------- sampler


@pytest.mark.parametrize(("size", "batch", "world"), [(27, 8, 2), (24, 12, 4), (40, 6, 3)])
def test_ranks_split_every_single_process_batch(size, batch, world):
    single = EpochPermutation(size, seed=5)
    ranks = [EpochPermutation(size, 5, rank, world, batch) for rank in range(world)]
    for epoch in (0, 3):
        single.epoch = epoch
        for sampler in ranks:
            sampler.epoch = epoch
        order = list(single)
        slices = [list(sampler) for sampler in ranks]
        assert all(len(s) == len(r) == (size // batch) * (batch // world) for s, r in zip(slices, ranks, strict=True))
        share = batch // world
        for step in range(size // batch):
            parts = [s[step * share : (step + 1) * share] for s in slices]
            assert sorted(itertools.chain.from_iterable(parts)) == sorted(order[step * batch : (step + 1) * batch])
        union = list(itertools.chain.from_iterable(slices))
        assert len(set(union)) == len(union)  # disjoint
        assert set(union) == set(order[: (size // batch) * batch])  # the single-process epoch (drop_last)


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="cannot be split"):
        EpochPermutation(24, 0, 0, 3, 8)
    with pytest.raises(ConfigError, match=r"train_cam\.batch_size=16 cannot be split over 3"):
        distributed.check_batch("train_cam", 16, 3)
    distributed.check_batch("train_cam", 16, 4)


def test_training_steps_spread_over_the_planned_devices(monkeypatch):
    """One device: the caller trains itself; two: one launch with the caller's arguments, rank 0's result back."""
    launched = []

    def fake_launch(fn, *args, world, device_type, **kwargs):
        launched.append((fn, args, world, device_type, kwargs))
        return {"rank0": True}

    monkeypatch.setattr(distributed, "launch", fake_launch)
    monkeypatch.delenv("ESOL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("ESOL_CPU_WORLD_SIZE", "1")
    assert distributed.spread_training("train_seg", 8, "cpu", len, "x", out="y") == (False, None)
    assert launched == []
    monkeypatch.setenv("ESOL_CPU_WORLD_SIZE", "2")
    assert distributed.spread_training("train_seg", 8, "cpu", len, "x", out="y") == (True, {"rank0": True})
    assert launched == [(len, ("x",), 2, "cpu", {"out": "y"})]
    with pytest.raises(ConfigError, match=r"train_irn\.batch_size=7 cannot be split over 2"):
        distributed.spread_training("train_irn", 7, "cpu", len)


def test_world_size_follows_the_lease():
    assert distributed.world_size_for_lease(2, {"CUDA_VISIBLE_DEVICES": "3,5"}) == 2
    assert distributed.world_size_for_lease(4, {"CUDA_VISIBLE_DEVICES": "3,5"}) == 2  # got fewer
    assert distributed.world_size_for_lease(1, {"CUDA_VISIBLE_DEVICES": "3,5"}) == 1  # Slurm gave more
    assert distributed.world_size_for_lease(2, {"CUDA_VISIBLE_DEVICES": ""}) == 1  # CPU
    assert distributed.world_size_for_lease(2, {"CUDA_VISIBLE_DEVICES": "", "ESOL_CPU_WORLD_SIZE": "2"}) == 2
    with pytest.raises(ConfigError, match="ESOL_CPU_WORLD_SIZE"):
        distributed.world_size_for_lease(1, {"CUDA_VISIBLE_DEVICES": "", "ESOL_CPU_WORLD_SIZE": "two"})
    assert distributed.plan("cpu", {"ESOL_CPU_WORLD_SIZE": "2"}) == (2, "cpu")
    assert distributed.plan("cpu", {"ESOL_WORLD_SIZE": "1", "ESOL_CPU_WORLD_SIZE": "2"}) == (1, "cpu")
    assert distributed.plan("cpu", {}) == (1, "cpu")


def test_cli_passes_the_world_size_on(monkeypatch, tmp_path):
    """`esol --gpus 2` on a machine without GPUs runs on CPU: ESOL_CPU_WORLD_SIZE processes."""
    import functools
    import os

    import esol.steps.eval_pseudo_labels as step
    from esol import cli

    from .conftest import REPO

    seen = {}

    @functools.wraps(step.run)
    def fake_run(params, **kwargs):
        seen["world"] = os.environ.get("ESOL_WORLD_SIZE")

    monkeypatch.setattr(step, "run", fake_run)
    monkeypatch.setenv("ESOL_NUM_GPUS", "0")
    monkeypatch.setenv("ESOL_CPU_WORLD_SIZE", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("ESOL_WORLD_SIZE", raising=False)
    argv = ["--params", str(REPO / "params.yaml"), "--data", "d", "--labels", "l", "--variant", "v", "--metrics", "m"]
    assert cli.main(["--gpus", "2", "eval_pseudo_labels", *argv]) == 0
    assert seen["world"] == "2"
    monkeypatch.setenv("ESOL_CPU_WORLD_SIZE", "0")
    assert cli.main(["--gpus", "2", "eval_pseudo_labels", *argv]) == 2


# --------------------------------------------------------------------------- (a) DDP training


class TinySet(TorchDataset):
    """A fixed regression problem: 32 samples of 6 features."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(32, 6, generator=g)
        self.y = (self.x @ torch.randn(6, 1, generator=g)).tanh()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return self.x[index], self.y[index]


def train_tiny(out: Path, epochs: int = 3, fail_at_epoch: int | None = None, tag: str = "run") -> dict:
    """Train a two-layer net (no BatchNorm: DDP's gradient mean is then exactly the full batch's);
    each rank saves its weights to ``out/rank<r>.pt`` and lists the epochs it ran in
    ``out/<tag>-rank<r>.epochs``. Also the body of each spawned rank."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    data = TinySet()
    rank = distributed.current().rank
    spec = TrainSpec(
        name="tiny",
        param_groups=[{"params": list(model.parameters()), "lr": 0.05}],
        momentum=0.9,
        weight_decay=1e-4,
        epochs=epochs,
        batch_size=8,
        seed=3,
        fingerprint="tiny",
    )

    def step(batch, net):
        if data.epoch == fail_at_epoch:
            raise RuntimeError(f"interrupted in epoch {data.epoch}")
        x, y = batch
        return F.mse_loss(net(x), y), {"mean_y": float(y.mean())}

    def note_epoch(epoch: int) -> None:
        with open(out / f"{tag}-rank{rank}.epochs", "a") as handle:
            handle.write(f"{epoch}\n")

    summary = train(spec, model, data, step, CPU, out / "checkpoints", out / "live", on_epoch_start=note_epoch)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    return summary


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Two gloo processes: interrupted in the second epoch, then resumed to the end."""
    out = tmp_path_factory.mktemp("ddp")
    with pytest.raises(RuntimeError, match="interrupted in epoch 1"):
        distributed.launch(train_tiny, out, fail_at_epoch=1, tag="first", world=2, device_type="cpu")
    after_first = checkpoint.safe_load(out / "checkpoints" / "last.pt")["epoch"]
    summary = distributed.launch(train_tiny, out, tag="resumed", world=2, device_type="cpu")
    return out, summary, after_first


def epochs_run(out: Path, tag: str, rank: int) -> list[int]:
    return [int(line) for line in (out / f"{tag}-rank{rank}.epochs").read_text().split()]


def test_ddp_ranks_end_with_identical_weights(ddp_run):
    out, _, _ = ddp_run
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


def test_ddp_resumes_after_the_last_complete_epoch(ddp_run):
    out, _, after_first = ddp_run
    assert after_first == 0  # epoch 1 failed: the checkpoint holds epoch 0
    for rank in (0, 1):
        assert epochs_run(out, "first", rank) == [0, 1]
        assert epochs_run(out, "resumed", rank) == [1, 2]


def test_ddp_matches_single_process_training_on_the_same_total_batch(ddp_run, tmp_path):
    """Interrupted and resumed on two processes == straight through on one (same total batch)."""
    out, summary, _ = ddp_run
    single_summary = train_tiny(tmp_path)
    single, ddp = torch.load(tmp_path / "rank0.pt"), torch.load(out / "rank0.pt")
    torch.manual_seed(0)
    initial = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).state_dict()
    assert not torch.allclose(single["0.weight"], initial["0.weight"], atol=1e-3)  # it trained
    for key in single:
        assert torch.allclose(single[key], ddp[key], atol=1e-5, rtol=1e-4), key
    # Scalars are averaged over the ranks: the same epoch means as one process.
    assert summary["loss"] == pytest.approx(single_summary["loss"], rel=1e-4)
    assert summary["mean_y"] == pytest.approx(single_summary["mean_y"], rel=1e-6, abs=1e-7)
    assert summary["lr"] == single_summary["lr"]
    # Only rank 0 writes: one checkpoint (world-size-agnostic: one process can resume it), one
    # set of curves.
    state = checkpoint.safe_load(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and set(state["model"]) == set(single)
    assert (out / "live" / "metrics.json").is_file()


# --------------------------------------------------------------------------- (b) CAM inference


def test_np_savez_does_not_depend_on_the_time(tmp_path, monkeypatch):
    """CAM files are compared byte for byte: the zip entries must carry no timestamp of their own."""
    from esol.inference.cams import save_cam

    keys, cams = np.array([1, 3]), np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7)
    save_cam(tmp_path / "a.npz", keys, cams)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    monkeypatch.setattr(time, "localtime", lambda *_: time.struct_time((2033, 5, 18, 3, 33, 20, 2, 138, 0)))
    save_cam(tmp_path / "b.npz", keys, cams)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_cam_workers_write_the_files_of_a_single_process(smoke_dataset, smoke_params, tmp_path, monkeypatch):
    from esol.steps import make_cam
    from esol.training.classifier import build_model

    torch.manual_seed(0)
    model = build_model(smoke_params, smoke_dataset)  # untrained is enough: the same weights everywhere
    checkpoint.save(tmp_path / "model.pt", {"model": model.state_dict()})
    monkeypatch.delenv("ESOL_WORLD_SIZE", raising=False)
    kwargs = {"data": smoke_dataset.root, "model": tmp_path / "model.pt", "split": "train"}
    monkeypatch.setenv("ESOL_CPU_WORLD_SIZE", "1")
    make_cam.run(smoke_params, out_dir=tmp_path / "single", **kwargs)
    monkeypatch.setenv("ESOL_CPU_WORLD_SIZE", "2")
    assert len(smoke_dataset.ids("train")) > smoke_params.make_cam.batch_size  # two batches: two workers
    make_cam.run(smoke_params, out_dir=tmp_path / "workers", **kwargs)
    single = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert single == sorted(f"{i}.npz" for i in smoke_dataset.ids("train"))
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == single
    for name in single:
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes(), name
    assert not (tmp_path / "workers.partial").exists()


# --------------------------------------------------------------------------- (c) a real Slurm

SLURM_LOCAL = Path(__file__).resolve().parents[1] / ".ci" / "slurm-local.sh"
SLURM_TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "mungekey")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A single-node Slurm on localhost (.ci/slurm-local.sh), installed from Debian's packages when
    missing; skipped where that cannot be done (not root, no apt, a real Slurm configured here)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a local Slurm needs root on Linux (daemons, /etc/slurm symlinks, mknod of fake GPUs)")
    if any(
        Path("/etc/slurm", name).exists() and not Path("/etc/slurm", name).is_symlink()
        for name in ("slurm.conf", "gres.conf")
    ):
        pytest.skip("/etc/slurm/slurm.conf belongs to a real Slurm set-up on this machine: not touching it")
    if not all(shutil.which(tool) for tool in SLURM_TOOLS):
        if not shutil.which("apt-get"):
            pytest.skip("Slurm is not installed and there is no apt-get to install slurm-wlm and munge")
        install = subprocess.run([SLURM_LOCAL, "install"], capture_output=True, text=True, timeout=900)
        if install.returncode != 0:
            pytest.skip(f"could not install Debian's slurmctld/slurmd/slurm-client/munge: {install.stderr[-500:]}")
    directory = tmp_path_factory.mktemp("slurm")
    up = subprocess.run([SLURM_LOCAL, "up", directory], capture_output=True, text=True, timeout=120)
    if up.returncode == 75:
        pytest.skip(f"another local Slurm is up on this machine: {up.stderr.strip()}")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield directory
    finally:
        down = subprocess.run([SLURM_LOCAL, "down", directory], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


def slurm_overrides(profile: dict, cpus: int = 1, mem_mb: int = 1000) -> list[str]:
    """The profile's per-rule resources, cut down to what one small test node can grant."""
    overrides = []
    for rule, resources in profile["set-resources"].items():
        for key, value in resources.items():
            if key == "mem_mb":
                value = min(value, mem_mb)
            elif key == "cpus_per_task":
                value = min(value, cpus)
            overrides.append(f"{rule}:{key}={value}")
    return overrides


@pytest.mark.slow
def test_smoke_pipeline_runs_as_slurm_jobs_and_matches_the_local_run(slurm_cluster, smoke_project, tmp_path):
    from .pipeline_project import make_project, run

    _, reference = smoke_project
    root = make_project(tmp_path / "esol")
    profile = yaml.safe_load((root / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    # The profile's command, with resources cut to this node (1 CPU a job: two jobs at once), the
    # rules' own threads (as in the local run) and status checks without slurmdbd (squeue).
    out = run(
        root,
        "timeout", "-k", "30", "1800",
        "snakemake", "--profile", "workflow/profiles/slurm",
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-keep-successful-logs",
        "--max-threads", "2",
        "--default-resources", "mem_mb=1000", "runtime=60", "cpus_per_task=1",
        "--set-resources", *slurm_overrides(profile),
        timeout=1900,
    )  # fmt: skip
    text = out.stdout + out.stderr
    jobs = {int(job): (int(slurm_id), Path(log)) for job, slurm_id, log in SUBMITTED.findall(text)}
    # Every job of the plan (Snakemake's "Job stats") went through sbatch, and each left its Slurm
    # log, but the target rule `all` and download_data: a localrule, the one step that may open a
    # connection, which compute nodes often lack; it runs where snakemake runs.
    stats = text[text.index("Job stats:") : text.index("total", text.index("Job stats:"))]
    planned = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if rule != "all"}
    assert planned.pop("download_data") == 1, stats
    assert sum(planned.values()) >= 20, stats
    ran: dict[str, int] = {}
    for slurm_id, log in jobs.values():
        rule = next(part[len("rule_") :] for part in log.parts if part.startswith("rule_")).split("_wildcards_")[0]
        ran[rule] = ran.get(rule, 0) + 1
        assert (root / log).is_file() or log.is_file(), f"no Slurm log {log} for job {slurm_id}"
    assert ran == planned, text[-3000:]
    # ... and completed in Slurm (slurmctld's own record), GPU steps with a device Slurm assigned.
    ctld = (slurm_cluster / "log" / "slurmctld.log").read_text()
    for slurm_id, _ in jobs.values():
        assert re.search(rf"_job_complete: JobId={slurm_id} WEXITSTATUS 0", ctld), f"Slurm job {slurm_id}"
    assert "GPU(s) assigned by Slurm job" in (root / "logs" / "train_cam.log").read_text()
    for name, expected in reference.items():
        assert json.loads((root / "results" / "metrics" / f"{name}.json").read_text()) == expected, name
