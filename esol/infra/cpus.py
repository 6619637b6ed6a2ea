"""How many processes a step may run: the job's threads, or the machine's CPUs when not given."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what Slurm or taskset granted)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def job_threads(threads: int) -> int:
    """A step's ``--threads``: Snakemake passes the job's threads (capped at ``--cores``); 0, as
    DVC's stages pass it, means every usable CPU."""
    if threads < 0:
        raise ValueError(f"--threads {threads}: expected 0 (all usable CPUs) or more")
    return threads or usable_cpus()
