"""Gather the shard folders of a per-image step (make_cam, refine_crf) into the step's one output folder."""

from __future__ import annotations

import logging
from pathlib import Path

from esol.infra.config import Params
from esol.infra.io import atomic_dir
from esol.infra.shards import gather

log = logging.getLogger("esol.gather_shards")

OUTPUTS = ("out_dir",)


def run(params: Params, *, parts: list[Path], out_dir: Path) -> dict:
    """Put the files of the shard folders PARTS into OUT_DIR: the folder one job would have written."""
    with atomic_dir(out_dir) as partial:
        files = gather(parts, partial)
    log.info("%d files from %d shards in %s", files, len(parts), out_dir)
    return {"shards": len(parts), "files": files}
