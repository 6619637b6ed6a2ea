"""Several devices for one step: one process per device, like ``torchrun`` on a single node.

``esol --gpus N <step>`` leases N devices (:mod:`esol.infra.devices`) and tells the step how many
processes to use through ``ESOL_WORLD_SIZE`` (the number of devices it got). A step that can use
them calls :func:`launch`, which spawns that many processes (``torch.multiprocessing``, start
method ``spawn``), each bound to one device, and waits for all of them:

* training (:func:`esol.training.loop.train`): every process runs the whole step; the model is wrapped
  in ``DistributedDataParallel`` (NCCL on GPU, gloo on CPU), each process takes its own slice of
  every global batch of the shared per-epoch permutation, and only rank 0 writes checkpoints,
  dvclive curves and outputs;
* CAM inference (:mod:`esol.steps.make_cam`): the parent lists the images and deals whole batches
  to worker processes (no process group), which write the same files a single process would.

With one device (the default) nothing is spawned and the step runs in its own process, exactly as
before. ``ESOL_CPU_WORLD_SIZE=N`` simulates N devices on CPU (gloo, N processes): for tests of the
multi-device path on machines without GPUs; it is not faster than one process.

This module imports torch only inside functions: the command line reads the world size before
anything may import torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esol.infra.config import ConfigError

log = logging.getLogger("esol.infra.distributed")

ENV_WORLD_SIZE = "ESOL_WORLD_SIZE"
ENV_CPU_WORLD_SIZE = "ESOL_CPU_WORLD_SIZE"
VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank ``rank`` of ``world`` processes on ``device_type``."""

    rank: int = 0
    world: int = 1
    device_type: str = "cpu"
    process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True inside a process group of more than one process (training)."""
        return self.process_group and self.world > 1


_CURRENT = Context()


def current() -> Context:
    """This process's rank and world; rank 0 of 1 outside :func:`launch`."""
    return _CURRENT


def _positive_int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{name}={value!r}: expected a whole number of processes, at least 1")
    return number


def visible_devices(env: Mapping[str, str]) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES, or None when it is unset."""
    if VISIBLE not in env:
        return None
    return [d.strip() for d in env[VISIBLE].split(",") if d.strip()]


def world_size_for_lease(gpus: int, env: Mapping[str, str]) -> int:
    """Processes for a step started with ``--gpus gpus``, after the lease set CUDA_VISIBLE_DEVICES:
    one per device it got (at most ``gpus``), or ``ESOL_CPU_WORLD_SIZE`` (default 1) on CPU."""
    visible = visible_devices(env)
    if gpus > 0 and visible:
        return max(1, min(gpus, len(visible)))
    return _positive_int(env.get(ENV_CPU_WORLD_SIZE, "1"), ENV_CPU_WORLD_SIZE)


def requested_world_size(env: Mapping[str, str] | None = None) -> int | None:
    """``ESOL_WORLD_SIZE`` (set by ``esol --gpus``, or by hand), or None when unset."""
    env = os.environ if env is None else env
    value = env.get(ENV_WORLD_SIZE, "").strip()
    return _positive_int(value, ENV_WORLD_SIZE) if value else None


def plan(device: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(processes, device type) for a step whose ``runtime.device`` is ``device``.

    ``ESOL_WORLD_SIZE`` when set; otherwise ``ESOL_CPU_WORLD_SIZE`` on CPU and 1 on GPU. Inside a
    launched process always (1, its device type): workers never launch workers of their own.
    """
    import torch

    env = os.environ if env is None else env
    if _CURRENT.world > 1:
        return 1, _CURRENT.device_type
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    device_type = "cuda" if cuda else "cpu"
    world = requested_world_size(env)
    if world is None:
        world = 1 if cuda else _positive_int(env.get(ENV_CPU_WORLD_SIZE, "1"), ENV_CPU_WORLD_SIZE)
    if cuda and world > torch.cuda.device_count():
        raise ConfigError(
            f"{world} processes requested ({ENV_WORLD_SIZE}) but only {torch.cuda.device_count()} GPU(s) "
            f"visible ({VISIBLE}={env.get(VISIBLE, '<unset>')})"
        )
    return world, device_type


def check_batch(name: str, batch_size: int, world: int) -> None:
    """Each of ``world`` processes trains on ``batch_size / world`` samples per step."""
    if world > 1 and batch_size % world:
        raise ConfigError(
            f"{name}.batch_size={batch_size} cannot be split over {world} processes: it must be a multiple of "
            f"the number of devices (each process takes batch_size / {world} samples of every batch)"
        )


def _setup_worker_logging(rank: int, world: int, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s [rank {rank}/{world}] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _die_with_parent(parent: int) -> None:
    """Linux: end this process when the launching process ends (killed by Snakemake, Ctrl-C), so
    that no orphaned rank keeps training or holds on to a device the parent's lease gave back."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent was already gone before prctl took effect
        os._exit(1)


def _entry(
    rank: int,
    world: int,
    device_type: str,
    process_group: bool,
    workdir: str,
    verbose: bool,
    parent: int,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
) -> None:
    """Body of every launched process (``torch.multiprocessing`` passes ``rank`` first)."""
    import torch
    import torch.distributed as dist

    global _CURRENT
    _die_with_parent(parent)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    _setup_worker_logging(rank, world, verbose)
    _CURRENT = Context(rank=rank, world=world, device_type=device_type, process_group=process_group)
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    elif process_group:  # training ranks share the CPU cores (CAM workers keep the single-process count)
        torch.set_num_threads(max(1, torch.get_num_threads() // world))
    if process_group:
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo",
            init_method=f"file://{workdir}/store",
            rank=rank,
            world_size=world,
            **({"device_id": torch.device("cuda", rank)} if device_type == "cuda" else {}),
        )
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        # The parent re-raises the first rank's exception itself (an InputError stays an InputError).
        with contextlib.suppress(Exception), open(Path(workdir) / f"error-{rank}.pkl", "wb") as handle:
            pickle.dump(exc, handle)
        raise
    finally:
        if process_group and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        with open(Path(workdir) / "result.pkl", "wb") as handle:
            pickle.dump(result, handle)


def launch(
    fn: Callable[..., Any],
    *args: Any,
    world: int,
    device_type: str,
    process_group: bool = True,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``world`` new processes, one per device; return rank 0's result.

    ``fn`` must be importable (a module-level function) and its arguments picklable. With
    ``process_group`` the processes join one (NCCL on GPU, gloo on CPU; rendezvous through a file,
    so no port is needed). If any process fails the others are stopped and the first failure is
    raised here.
    """
    import torch.multiprocessing as mp

    if world < 1:
        raise ValueError(f"world={world}")
    log.info(
        "starting %d processes on %s%s",
        world,
        device_type,
        f" ({VISIBLE}={os.environ.get(VISIBLE, '<unset>')})" if device_type == "cuda" else "",
    )
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    with tempfile.TemporaryDirectory(prefix="esol-dist-") as workdir:
        try:
            mp.start_processes(
                _entry,
                args=(world, device_type, process_group, workdir, verbose, os.getpid(), fn, args, kwargs),
                nprocs=world,
                join=True,
                start_method="spawn",
            )
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            log.error("rank %d of %d failed: %s", exc.error_index, world, exc)
            original = None
            with contextlib.suppress(Exception), open(Path(workdir) / f"error-{exc.error_index}.pkl", "rb") as handle:
                original = pickle.load(handle)
            if isinstance(original, Exception):
                raise original from exc
            raise
        with open(Path(workdir) / "result.pkl", "rb") as handle:
            return pickle.load(handle)


def spread_training(
    name: str, batch_size: int, device: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[bool, Any]:
    """Run training step NAME once per device when several are planned: ``(True, rank 0's result)``.

    ``(False, None)`` when this process trains alone (one device, or already one rank of a launch);
    the caller then goes on itself. The batch must split evenly over the devices.
    """
    world, device_type = plan(device)
    if world <= 1:
        return False, None
    check_batch(name, batch_size, world)
    return True, launch(fn, *args, world=world, device_type=device_type, **kwargs)


def all_mean(values: dict[str, float], device: Any) -> dict[str, float]:
    """The mean over all processes of each value (same keys everywhere); unchanged when alone."""
    if not _CURRENT.distributed:
        return values
    import torch
    import torch.distributed as dist

    keys = list(values)  # the same step code on every rank: the same keys in the same order
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / _CURRENT.world).tolist(), strict=True))


def barrier() -> None:
    if _CURRENT.distributed:
        import torch.distributed as dist

        dist.barrier()
