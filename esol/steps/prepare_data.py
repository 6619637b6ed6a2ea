"""Step 1: produce the dataset in the common layout (generate synthetic, or fetch and convert)."""

from __future__ import annotations

import logging
from pathlib import Path

from esol.config import Params
from esol.data.layout import Dataset
from esol.io import atomic_dir, write_json

log = logging.getLogger("esol.prepare_data")

OUTPUTS = ("out_dir", "metrics", "downloads")


def run(params: Params, *, out_dir: Path, metrics: Path, downloads: Path = Path("data/downloads")) -> dict:
    """Write ``params.dataset`` into OUT_DIR (images, masks, splits, labels, meta.json).

    Synthetic data is generated from ``dataset.seed``; VOC 2012 and COCO 2014 are downloaded
    into DOWNLOADS (checksummed, resumable) and converted. METRICS receives the split sizes.
    """
    name = params.dataset.name
    with atomic_dir(out_dir) as partial:
        if name == "synthetic":
            from esol.data.synthetic import generate

            generate(partial, params.synthetic, params.dataset.seed)
        else:
            from esol.data import real

            real.prepare(name, partial, Path(downloads))
        sizes = Dataset(partial).check()
    log.info("dataset %s ready in %s: %s", name, out_dir, sizes)
    summary = {"dataset": name, "splits": sizes}
    write_json(metrics, summary)
    return summary
