"""GPU leases (esol.infra.devices): each GPU job gets devices of its own, without a GPU in sight.

Devices are simulated with ESOL_NUM_GPUS; locks live in the test's temporary directory. Only a
few processes are started, none of which imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from esol.infra import devices

from .conftest import REPO

BIN = Path(sys.executable).parent

# A GPU job as `esol --gpus N <step>` runs one: lease first, then work (here: record and sleep).
ENTRY = """\
import json
import os
import sys
import time

from esol.infra import devices
from esol.infra.logs import setup_logging

out, gpus, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
setup_logging()
devices.claim(gpus)
visible = os.environ.get("CUDA_VISIBLE_DEVICES")
print("leased", visible, flush=True)
start = time.time()
time.sleep(seconds)
record = {"visible": visible, "start": start, "end": time.time(), "torch": "torch" in sys.modules}
with open(out, "w") as handle:
    json.dump(record, handle)
"""

SNAKEFILE = """\
import sys


rule all:
    input:
        expand("out/{{i}}.json", i=range({jobs})),


rule job:
    output:
        "out/{{i}}.json",
    log:
        "logs/{{i}}.log",
    resources:
        gpu=1,
    shell:
        "{{sys.executable}} {entry} {{output}} {{resources.gpu}} {seconds} > /dev/null 2> {{log}}"
"""


@pytest.fixture(autouse=True)
def _release_leases(monkeypatch):
    """Leases taken by claim() in this process are kept for the process's life: drop them here."""
    monkeypatch.setattr(devices, "_HELD", [])
    yield
    for lease in devices._HELD:
        lease.release()


@pytest.fixture
def locks(tmp_path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def job_env(locks):
    """A fresh environment per job (claim writes CUDA_VISIBLE_DEVICES into it)."""

    def make(num_gpus: int | None = 4, **extra: str) -> dict[str, str]:
        env = {"PATH": "", devices.ENV_LOCK_DIR: str(locks)}
        if num_gpus is not None:
            env[devices.ENV_NUM_GPUS] = str(num_gpus)
        env.update(extra)
        return env

    return make


def subprocess_env(locks: Path, num_gpus: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != devices.VISIBLE and not k.startswith("SLURM_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env[devices.ENV_NUM_GPUS] = str(num_gpus)
    env[devices.ENV_LOCK_DIR] = str(locks)
    return env


# --- the lease ---------------------------------------------------------------------------------


def test_each_lease_gets_other_devices(job_env, locks):
    envs = [job_env(4) for _ in range(3)]
    first = devices.claim(1, env=envs[0])
    second = devices.claim(1, env=envs[1])
    pair = devices.claim(2, env=envs[2])
    assert [envs[0][devices.VISIBLE], envs[1][devices.VISIBLE], envs[2][devices.VISIBLE]] == ["0", "1", "2,3"]
    assert first.devices == ("0",) and second.devices == ("1",) and pair.devices == ("2", "3")
    assert not any(devices.is_free(locks, d) for d in "0123")
    assert devices._HELD == [first, second, pair]  # kept alive for the rest of the process
    second.release()
    assert devices.is_free(locks, "1") and not second.held
    assert devices.claim(1, env=job_env(4)).devices == ("1",)


def test_context_exit_releases(locks):
    locks.mkdir()
    with devices.acquire(2, ["0", "1", "2"], locks) as lease:
        assert lease.devices == ("0", "1")
        assert not devices.is_free(locks, "0") and not devices.is_free(locks, "1") and devices.is_free(locks, "2")
    assert all(devices.is_free(locks, d) for d in "012")
    assert f"pid {os.getpid()}" in devices.holder(locks, "0")


def test_waits_for_a_device_to_come_free(job_env, locks, caplog):
    busy = devices.claim(2, env=job_env(2))
    threading.Timer(0.6, busy.release).start()
    env = job_env(2)
    with caplog.at_level(logging.INFO, logger="esol.infra.devices"):
        lease = devices.claim(1, env=env, timeout=20)
    assert lease.devices == ("0",) and env[devices.VISIBLE] == "0"
    assert lease.waited >= 0.5
    waiting = [r.getMessage() for r in caplog.records if "waiting for 1 free GPU" in r.getMessage()]
    assert len(waiting) == 1 and f"pid {os.getpid()}" in waiting[0]


def test_times_out_naming_the_holders(job_env, locks):
    devices.claim(2, env=job_env(2))
    started = time.monotonic()
    with pytest.raises(devices.LeaseTimeout, match=f"held by: GPU 0: pid {os.getpid()}"):
        devices.claim(1, env=job_env(2), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    with pytest.raises(devices.LeaseTimeout):
        devices.claim(1, env=job_env(2, **{devices.ENV_TIMEOUT: "0"}))


def test_all_or_nothing(job_env, locks):
    devices.claim(1, env=job_env(2))
    with pytest.raises(devices.LeaseTimeout):
        devices.claim(2, env=job_env(2), timeout=0.2)
    assert devices.is_free(locks, "1"), "a failed attempt must not keep the devices it got"


def test_cuda_visible_devices_is_the_pool(job_env):
    env = job_env(None, CUDA_VISIBLE_DEVICES="5,2")
    assert devices.claim(1, env=env).devices == ("5",)
    assert devices.claim(1, env=job_env(None, CUDA_VISIBLE_DEVICES="5,2")).devices == ("2",)
    assert devices.parse_visible("0, 1,-1,2") == ["0", "1"]


def test_more_than_the_pool_leases_the_pool(job_env, caplog):
    env = job_env(2)
    with caplog.at_level(logging.WARNING, logger="esol.infra.devices"):
        assert devices.claim(3, env=env).devices == ("0", "1")
    assert "only 2 available" in caplog.text


def test_zero_gpus_hides_all(job_env, locks):
    env = job_env(4)
    assert devices.claim(0, env=env) is None
    assert env[devices.VISIBLE] == ""
    with pytest.raises(devices.DeviceError):
        devices.claim(-1, env=job_env(4))


@pytest.mark.parametrize("hidden", [{devices.ENV_NUM_GPUS: "0"}, {devices.VISIBLE: ""}, {devices.VISIBLE: "-1"}])
def test_no_gpu_falls_back_to_cpu(job_env, locks, caplog, hidden):
    env = job_env(None, **hidden)
    with caplog.at_level(logging.INFO, logger="esol.infra.devices"):
        assert devices.claim(1, env=env) is None
    assert env[devices.VISIBLE] == ""
    assert [r.getMessage() for r in caplog.records if "running on CPU" in r.getMessage()]
    assert not locks.exists() or not list(locks.iterdir())


def test_counts_devices_without_torch(tmp_path):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\n"
        "echo '  MIG 1g.10gb     Device  0: (UUID: MIG-bbbb)'\n"
        "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)'\n"
    )
    smi.chmod(0o755)
    assert devices.count_devices({"PATH": str(smi.parent)}) == (2, "nvidia-smi -L")
    assert devices.count_devices({"PATH": str(smi.parent), devices.ENV_NUM_GPUS: "3"})[0] == 3
    with pytest.raises(devices.DeviceError):
        devices.count_devices({devices.ENV_NUM_GPUS: "two"})


@pytest.mark.parametrize(
    "slurm",
    [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_GPUS": "3", "SLURM_STEP_GPUS": "3"},
        {"SLURM_JOB_GPUS": "2"},
    ],
)
def test_slurm_assigned_devices_are_left_alone(job_env, locks, slurm):
    env = job_env(4, SLURM_JOB_ID="77", **slurm)
    assert devices.claim(1, env=env) is None
    assert env.get(devices.VISIBLE) == slurm.get(devices.VISIBLE)
    assert not locks.exists() or not list(locks.iterdir())


def test_slurm_allocation_larger_than_the_job_is_shared_out(job_env, locks):
    """Snakemake's local executor inside one `salloc --gpus=4`: every job inherits all four."""
    allocation = {"SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "SLURM_JOB_GPUS": "4,5,6,7"}
    first, second = job_env(None, **allocation), job_env(None, **allocation)
    assert devices.claim(1, env=first).devices == ("0",)
    assert devices.claim(1, env=second).devices == ("1",)
    assert (first[devices.VISIBLE], second[devices.VISIBLE]) == ("0", "1")
    assert (locks / "slurm-77" / "gpu-0.lock").exists()


def test_default_lock_dir_is_machine_wide(monkeypatch):
    monkeypatch.setenv("TMPDIR", "/nonexistent")
    default = Path("/tmp") / f"esol-gpu-locks-{os.getuid()}"
    existed = default.exists()
    assert devices.lock_dir({}) == default and default.is_dir()
    if not existed:
        default.rmdir()


# --- processes ---------------------------------------------------------------------------------


def test_sigkilled_job_frees_its_device(tmp_path, job_env, locks):
    entry = tmp_path / "job.py"
    entry.write_text(ENTRY)
    holder = subprocess.Popen(
        [sys.executable, entry, tmp_path / "never.json", "1", "120"],
        env=subprocess_env(locks, 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout.readline().split() == ["leased", "0"]
        assert devices.claim(1, env=job_env(2)).devices == ("1",)
        with pytest.raises(devices.LeaseTimeout, match=f"pid {holder.pid}"):
            devices.claim(1, env=job_env(2), timeout=0.2)
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
        lease = devices.claim(1, env=job_env(2), timeout=0)  # no waiting: the kernel dropped the lock
        assert lease.devices == ("0",)
    finally:
        holder.kill()
        holder.wait()


def test_cli_leases_before_torch_is_imported(tmp_path, locks):
    """`esol --gpus N <step>` takes its lease before anything imports torch (stopped right there)."""
    code = (
        "import json, sys\n"
        "from esol.infra import devices\n"
        "def claim(n, **kwargs):\n"
        "    print(json.dumps({'n': n, 'torch': 'torch' in sys.modules}), flush=True)\n"
        "    raise SystemExit(0)\n"
        "devices.claim = claim\n"
        "from esol.cli import main\n"
        "main(['--log', sys.argv[1], '--gpus', '2', 'train_cam', '--data', 'x', '--out-model', 'y'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, tmp_path / "cli.log"],
        env=subprocess_env(locks, 4),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == {"n": 2, "torch": False}


def test_cli_runs_the_step_on_its_leased_device(monkeypatch, locks, tmp_path):
    import functools

    from esol import cli
    from esol.steps import prepare_data

    seen = {}

    @functools.wraps(prepare_data.run)
    def fake_run(params, **kwargs):
        seen["visible"] = os.environ.get(devices.VISIBLE)
        seen["kwargs"] = kwargs

    for key, value in subprocess_env(locks, 2).items():
        if key.startswith("ESOL_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv(devices.VISIBLE, raising=False)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(prepare_data, "run", fake_run)
    monkeypatch.setattr(cli, "setup_logging", lambda verbose=False: None)
    other = devices.claim(1, env={devices.ENV_NUM_GPUS: "2", devices.ENV_LOCK_DIR: str(locks)})
    argv = ["--gpus", "1", "prepare_data", "--params", str(REPO / "params.yaml"), "--sources", "s"]
    argv += ["--out-dir", "d", "--metrics", "m"]
    assert cli.main(argv) == 0
    assert seen["visible"] == "1" and other.devices == ("0",)
    assert "gpus" not in seen["kwargs"]
    assert [lease.devices for lease in devices._HELD] == [("0",), ("1",)]


# --- Snakemake: the acceptance test --------------------------------------------------------------


def run_workflow(tmp_path: Path, jobs: int, num_gpus: int, seconds: float) -> list[dict]:
    entry = tmp_path / "job.py"
    entry.write_text(ENTRY)
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(jobs=jobs, entry=entry, seconds=seconds))
    result = subprocess.run(
        [BIN / "snakemake", "--cores", "4", "--resources", "gpu=4", "--directory", tmp_path],
        cwd=tmp_path,
        env=subprocess_env(tmp_path / "locks", num_gpus),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads((tmp_path / "out" / f"{i}.json").read_text()) for i in range(jobs)]
    for i, record in enumerate(records):
        record["log"] = (tmp_path / "logs" / f"{i}.log").read_text()
        assert not record["torch"]
    return records


def test_snakemake_gives_each_gpu_job_its_own_device(tmp_path):
    """`snakemake --cores 4 --resources gpu=4` on 4 devices: 4 jobs at once, each on its own GPU."""
    records = run_workflow(tmp_path, jobs=4, num_gpus=4, seconds=2)
    assert sorted(r["visible"] for r in records) == ["0", "1", "2", "3"]
    assert max(r["start"] for r in records) < min(r["end"] for r in records), "the 4 jobs did not overlap"
    assert all("GPU lease: CUDA_VISIBLE_DEVICES=" in r["log"] for r in records)


def test_snakemake_jobs_wait_when_devices_run_out(tmp_path):
    """Snakemake allows 4 GPU jobs but only 2 devices exist: the leases make the others wait."""
    records = run_workflow(tmp_path, jobs=4, num_gpus=2, seconds=1)
    assert {r["visible"] for r in records} == {"0", "1"}
    for a in records:
        overlapping = [b for b in records if b is not a and b["start"] < a["end"] and a["start"] < b["end"]]
        assert all(b["visible"] != a["visible"] for b in overlapping), "two jobs shared a device"
        running = [b for b in records if b["start"] <= a["start"] < b["end"]]
        assert len(running) <= 2
    assert any("waiting for 1 free GPU" in r["log"] for r in records)
