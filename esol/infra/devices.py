"""GPU leases: every job that needs GPUs gets devices of its own.

``snakemake --cores 8 --resources gpu=4`` only caps how many GPU jobs run at once; Snakemake
never tells a job *which* device to use, so without help every job would land on GPU 0. Here a
job that needs N GPUs takes N device slots, one lock file per device (``fcntl.flock``) in a
machine-wide lock directory, and sets ``CUDA_VISIBLE_DEVICES`` to the devices it holds before
anything in the process initialises CUDA. Nobody has to release a slot: the kernel drops a
``flock`` when its last file descriptor closes, which happens when the job ends, however it ends
(SIGKILL, out-of-memory killer, crash).

Which devices make up the pool, in this order:

1. ``CUDA_VISIBLE_DEVICES``, when set: a job leases from the devices it was given;
2. ``ESOL_NUM_GPUS=N``: devices ``0..N-1`` (simulated devices in tests, or a machine where
   detection fails);
3. ``nvidia-smi -L``, then ``/proc/driver/nvidia/gpus``, then ``/dev/nvidiaN`` (torch is never
   imported for this: importing it first could initialise CUDA with the wrong devices).

Under Slurm (``SLURM_JOB_ID`` with ``CUDA_VISIBLE_DEVICES``, ``SLURM_STEP_GPUS`` or
``SLURM_JOB_GPUS`` set) the scheduler has already chosen the devices and nothing is leased, unless
the allocation holds more devices than the job asked for (Snakemake's local executor inside one
``salloc``): then the job leases from the allocation, with locks kept per Slurm job. With no GPU
at all the job runs on CPU: ``CUDA_VISIBLE_DEVICES`` is set empty and one log line says so.

Environment: ``ESOL_GPU_LOCK_DIR`` (lock directory; default ``/tmp/esol-gpu-locks-<uid>``),
``ESOL_NUM_GPUS`` (device count override), ``ESOL_GPU_WAIT_TIMEOUT`` (seconds to wait for free
devices, default 86400; ``inf`` waits for ever, ``0`` fails at once).

``esol devices`` prints the pool and who holds each device.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path

log = logging.getLogger("esol.infra.devices")

ENV_LOCK_DIR = "ESOL_GPU_LOCK_DIR"
ENV_NUM_GPUS = "ESOL_NUM_GPUS"
ENV_TIMEOUT = "ESOL_GPU_WAIT_TIMEOUT"
VISIBLE = "CUDA_VISIBLE_DEVICES"
SLURM_GPU_VARS = (VISIBLE, "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
DEFAULT_TIMEOUT = 24 * 3600.0
POLL_SECONDS = 0.25
WAIT_LOG_SECONDS = 300.0

# Leases taken by claim(): referenced here so they live exactly as long as the process.
_HELD: list[Lease] = []


class DeviceError(RuntimeError):
    """The devices cannot be leased (bad request or settings, unusable lock directory)."""


class LeaseTimeout(DeviceError):
    """Not enough devices came free before the timeout."""


def parse_visible(value: str) -> list[str]:
    """Device ids in a CUDA_VISIBLE_DEVICES value; like CUDA, stop at the first invalid entry."""
    ids = []
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        ids.append(item)
    return ids


def count_devices(env: MutableMapping[str, str] | None = None) -> tuple[int, str]:
    """The number of NVIDIA devices on this machine, and where that number came from."""
    env = os.environ if env is None else env
    if env.get(ENV_NUM_GPUS, "").strip():
        try:
            count = int(env[ENV_NUM_GPUS])
        except ValueError:
            raise DeviceError(f"{ENV_NUM_GPUS}={env[ENV_NUM_GPUS]!r} is not a whole number") from None
        if count < 0:
            raise DeviceError(f"{ENV_NUM_GPUS}={count} is negative")
        return count, f"{ENV_NUM_GPUS}={count}"
    tried = []
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
            return sum(line.startswith("GPU ") for line in out.splitlines()), "nvidia-smi -L"
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"nvidia-smi -L failed: {exc}")
    else:
        tried.append("no nvidia-smi")
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir())), str(proc)
    tried.append(f"no {proc}")
    nodes = [p for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)]
    if nodes:
        return len(nodes), "/dev/nvidiaN"
    tried.append("no /dev/nvidiaN")
    return 0, ", ".join(tried)


def slurm_devices(env: MutableMapping[str, str]) -> list[str] | None:
    """The GPUs Slurm gave this job, or None outside a Slurm job with GPUs."""
    if not env.get("SLURM_JOB_ID"):
        return None
    for var in SLURM_GPU_VARS:
        if var in env:
            return parse_visible(env[var])
    return None


def device_pool(env: MutableMapping[str, str] | None = None) -> tuple[list[str], str]:
    """The device ids a job may lease from, and where they came from."""
    env = os.environ if env is None else env
    assigned = slurm_devices(env)
    if assigned is not None:
        return assigned, f"Slurm job {env['SLURM_JOB_ID']}"
    if VISIBLE in env:
        return parse_visible(env[VISIBLE]), f"{VISIBLE}={env[VISIBLE]!r}"
    count, source = count_devices(env)
    return [str(i) for i in range(count)], source


def wait_timeout(env: MutableMapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    value = env.get(ENV_TIMEOUT, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise DeviceError(f"{ENV_TIMEOUT}={value!r} is not a number of seconds") from None
    if math.isnan(seconds) or seconds < 0:
        raise DeviceError(f"{ENV_TIMEOUT}={value!r} must be 0 or more seconds")
    return seconds


def lock_dir(env: MutableMapping[str, str] | None = None) -> Path:
    """The lock directory, created if needed. The default one must be a directory of ours.

    Deliberately not under $TMPDIR, which schedulers and shells may set per job or per session:
    every job on the machine has to find the same locks.
    """
    env = os.environ if env is None else env
    explicit = env.get(ENV_LOCK_DIR, "").strip()
    path = Path(explicit) if explicit else Path("/tmp") / f"esol-gpu-locks-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(f"cannot create the GPU lock directory {path}: {exc} (set {ENV_LOCK_DIR})") from None
    if not explicit:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise DeviceError(f"{path} is not a directory owned by you: set {ENV_LOCK_DIR} to one that is")
    return path


def _lock_path(directory: Path, device: str) -> Path:
    return directory / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def _try_lock(directory: Path, device: str) -> int | None:
    """An open descriptor holding the device's lock, or None when another process holds it."""
    path = _lock_path(directory, device)
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_RDWR | os.O_CREAT, 0o664)
    except PermissionError:  # a lock directory shared between users: flock needs no write access
        fd = os.open(path, flags | os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def holder(directory: Path, device: str) -> str:
    """What the last process to lease ``device`` wrote into its lock file (pid and command)."""
    try:
        return _lock_path(directory, device).read_text(errors="replace").strip() or "?"
    except OSError:
        return "?"


def is_free(directory: Path, device: str) -> bool:
    fd = _try_lock(directory, device)
    if fd is None:
        return False
    os.close(fd)
    return True


class Lease:
    """Devices held through open, locked files. Released by :meth:`release`, at the end of a
    ``with`` block, or by the kernel when the process ends. Garbage collection does not release
    it: the descriptors are plain integers."""

    def __init__(self, devices: Sequence[str], fds: Sequence[int], directory: Path, waited: float = 0.0):
        self.devices = tuple(devices)
        self.directory = directory
        self.waited = waited
        self._fds = list(fds)

    @property
    def visible(self) -> str:
        """The value for CUDA_VISIBLE_DEVICES."""
        return ",".join(self.devices)

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.visible!r}, {'held' if self.held else 'released'}, {self.directory})"


def _note_holder(fd: int) -> None:
    note = f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:300]}\n"
    with contextlib.suppress(OSError):  # read-only descriptor in a shared directory
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)


def acquire(
    n: int,
    pool: Sequence[str],
    directory: Path,
    timeout: float = DEFAULT_TIMEOUT,
    poll: float = POLL_SECONDS,
    log_every: float = WAIT_LOG_SECONDS,
) -> Lease:
    """Lease ``n`` devices of ``pool``, all or none, waiting up to ``timeout`` seconds.

    Each attempt locks free devices without blocking and gives them all back unless it got
    ``n``, so two jobs each wanting two devices cannot end up holding one each and waiting on
    each other for ever.
    """
    if n < 1 or n > len(pool):
        raise DeviceError(f"cannot lease {n} GPU(s) from a pool of {len(pool)}")
    started = time.monotonic()
    announced: float | None = None
    while True:
        got: list[tuple[str, int]] = []
        busy: list[str] = []
        for device in pool:
            fd = _try_lock(directory, device)
            if fd is None:
                busy.append(device)
            else:
                got.append((device, fd))
                if len(got) == n:
                    break
        if len(got) == n:
            for _, fd in got:
                _note_holder(fd)
            return Lease([d for d, _ in got], [fd for _, fd in got], directory, time.monotonic() - started)
        for _, fd in got:
            os.close(fd)
        waited = time.monotonic() - started
        holders = "; ".join(f"GPU {d}: {holder(directory, d)}" for d in busy)
        if waited >= timeout:
            raise LeaseTimeout(
                f"no {n} free GPU(s) among {','.join(pool)} after {waited:.0f} s ({ENV_TIMEOUT}={timeout:g}); "
                f"held by: {holders}"
            )
        if announced is None or waited - announced >= log_every:
            log.info(
                "waiting for %d free GPU(s): %d of %d in use (%s); locks in %s",
                n,
                len(busy),
                len(pool),
                holders,
                directory,
            )
            announced = waited
        time.sleep(max(0.0, min(poll, timeout - waited)))


def _warn_if_cuda_started() -> None:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    initialised = getattr(cuda, "is_initialized", None)
    if initialised is not None and initialised():
        log.warning("CUDA was initialised before the GPU lease: this process may not use the leased devices")


def claim(
    n: int,
    *,
    env: MutableMapping[str, str] | None = None,
    timeout: float | None = None,
    directory: Path | None = None,
) -> Lease | None:
    """Give this process ``n`` GPUs of its own for the rest of its life; call before CUDA starts.

    Sets ``CUDA_VISIBLE_DEVICES`` in ``env`` (default: ``os.environ``) and returns the lease, or
    None where nothing was leased: ``n == 0`` (all devices hidden), devices assigned by Slurm
    (left as they are), or no GPU found (all hidden: the job runs on CPU).
    """
    env = os.environ if env is None else env
    if n < 0:
        raise DeviceError(f"--gpus {n}: the number of GPUs cannot be negative")
    if n == 0:
        env[VISIBLE] = ""
        log.info("no GPU requested: running on CPU (%s='')", VISIBLE)
        return None
    pool, source = device_pool(env)
    assigned = slurm_devices(env) is not None
    if not pool:
        env[VISIBLE] = ""
        log.info(
            "no GPU found (%s): running on CPU (%s=''); set %s=N if this machine has N GPUs",
            source,
            VISIBLE,
            ENV_NUM_GPUS,
        )
        return None
    if assigned and len(pool) <= n:
        if len(pool) < n:
            log.warning("%d GPU(s) requested but %s assigned only %s", n, source, ",".join(pool))
        log.info("GPU(s) assigned by %s: %s=%s; no lease needed", source, VISIBLE, env.get(VISIBLE, "<unset>"))
        return None
    if n > len(pool):
        log.warning("%d GPU(s) requested but only %d available (%s): leasing %d", n, len(pool), source, len(pool))
        n = len(pool)
    directory = directory or lock_dir(env)
    if assigned:  # Slurm's ids may be relative to the job: keep each allocation's locks apart
        directory = directory / f"slurm-{env['SLURM_JOB_ID']}"
        directory.mkdir(mode=0o700, exist_ok=True)
    lease = acquire(n, pool, directory, wait_timeout(env) if timeout is None else timeout)
    env[VISIBLE] = lease.visible
    _HELD.append(lease)
    log.info(
        "GPU lease: %s=%s (%d of %s from %s%s; locks in %s)",
        VISIBLE,
        lease.visible,
        n,
        ",".join(pool),
        source,
        f", after waiting {lease.waited:.0f} s" if lease.waited >= 1 else "",
        directory,
    )
    _warn_if_cuda_started()
    return lease


def main(argv: list[str] | None = None) -> int:
    """Print the device pool, the lock directory and who holds each device."""
    if argv:
        print("usage: esol devices  (prints the GPU pool and who holds each device)", file=sys.stderr)
        return 2
    pool, source = device_pool()
    directory = lock_dir()
    if slurm_devices(os.environ) is not None:
        directory = directory / f"slurm-{os.environ['SLURM_JOB_ID']}"
    print(f"pool: {','.join(pool) or '(none: jobs run on CPU)'} from {source}")
    print(f"locks: {directory}")
    for device in pool:
        free = not directory.is_dir() or is_free(directory, device)
        print(f"GPU {device}: {'free' if free else 'held by ' + holder(directory, device)}")
    return 0
