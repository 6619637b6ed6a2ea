"""Shards: a per-image step split into separate jobs (Snakemake scatter-gather, one DVC stage each).

Shard ``k`` of ``n`` takes items ``k, k + n, k + 2n, ...`` of the step's work list (images, or
whole CAM batches, whose members must stay together). Gathering the shards' output folders gives
exactly the files one job writes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from esol.infra.config import ConfigError
from esol.infra.io import InputError

T = TypeVar("T")


def check(shard: int, shards: int) -> None:
    """Refuse a shard index outside ``0 .. shards - 1``."""
    if shards < 1 or not 0 <= shard < shards:
        raise ConfigError(f"--shard {shard} --shards {shards}: expected 0 <= shard < shards")


def take(items: Sequence[T], shard: int, shards: int) -> list[T]:
    """Shard ``shard`` of ``shards`` of ``items``: every ``shards``-th item from ``shard`` on."""
    check(shard, shards)
    return list(items[shard::shards])


def gather(parts: Sequence[Path], out: Path) -> int:
    """Put every file of the ``parts`` folders into ``out`` (hard links where the file system
    allows, else copies: the bytes are the shards' own). A file name in two parts is an error.
    Hidden files are left out: each folder has its own (Snakemake's ``.snakemake_timestamp``)."""
    seen: dict[str, Path] = {}
    for part in parts:
        part = Path(part)
        if not part.is_dir():
            raise InputError(f"{part}: shard output folder not found")
        for source in sorted(p for p in part.iterdir() if not p.name.startswith(".")):
            if source.name in seen:
                raise InputError(f"{source.name}: written by two shards ({seen[source.name]} and {part})")
            seen[source.name] = part
            target = out / source.name
            target.unlink(missing_ok=True)  # left by an interrupted gather
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    return len(seen)
