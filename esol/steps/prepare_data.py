"""Step 1: produce the dataset in the common layout (generate synthetic, or convert what download_data found)."""

from __future__ import annotations

import logging
from pathlib import Path

from esol.data.layout import Dataset
from esol.infra.config import Params
from esol.infra.io import InputError, atomic_dir, read_json, write_json

log = logging.getLogger("esol.prepare_data")

OUTPUTS = ("out_dir", "metrics")


def run(params: Params, *, sources: Path, out_dir: Path, metrics: Path, threads: int = 0) -> dict:
    """Write ``params.dataset`` into OUT_DIR (images, masks, splits, labels, meta.json).

    Synthetic data is generated from ``dataset.seed``; VOC 2012 and COCO 2014 are converted from
    the extracted trees listed in SOURCES (written by download_data); no connection is opened.
    A folder of your own images (``folder.root``) is validated and pointed at, not
    copied. METRICS receives the split sizes. THREADS: processes painting COCO's masks (0:
    ``ESOL_PREPARE_WORKERS`` or the usable CPUs).
    """
    name = params.dataset.name
    manifest = read_json(sources)
    if manifest.get("dataset") != name:
        raise InputError(f"{sources}: lists dataset {manifest.get('dataset')!r}, not {name!r}; run download_data again")
    with atomic_dir(out_dir) as partial:
        if name == "synthetic":
            from esol.data.synthetic import generate

            generate(partial, params.synthetic, params.dataset.seed)
        elif name == "folder":
            from esol.data.folder import prepare_folder

            prepare_folder(partial, params.folder, params.dataset.seed)
        else:
            from esol.data import real

            real.convert(manifest, partial, str(sources), processes=threads or None)
        sizes = Dataset(partial).check()
    log.info("dataset %s ready in %s: %s", name, out_dir, sizes)
    summary = {"dataset": name, "splits": sizes}
    write_json(metrics, summary)
    return summary
