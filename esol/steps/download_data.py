"""Step 0: find or fetch the dataset's archives (verified, extracted), for prepare_data to convert."""

from __future__ import annotations

import logging
from pathlib import Path

from esol.infra.config import Params
from esol.infra.io import write_json

log = logging.getLogger("esol.download_data")

OUTPUTS = ("out",)


def run(params: Params, *, out: Path, downloads: Path = Path("data/downloads")) -> dict:
    """Locate or download ``params.dataset``'s archives and write their extracted trees to OUT.

    The one step that may open a connection (run it where the internet is: ``snakemake --cores 1
    download_data`` on a login node). Each archive is taken, in order, from ESOL_DATA_DIR's
    extracted trees, an earlier extraction under DOWNLOADS, a verified archive in DOWNLOADS, or
    its mirrors (not with ESOL_DATA_DIR set; SBD only with ``dataset.sbd: true``). Synthetic data
    and a folder of your own images need nothing: OUT then lists no tree.
    """
    name = params.dataset.name
    if name in ("synthetic", "folder"):
        manifest: dict = {"dataset": name, "roots": {}, "sources": []}
    else:
        from esol.data import real

        manifest = real.download(name, Path(downloads), sbd=params.dataset.sbd)
    write_json(out, manifest)
    log.info("%s: %s", name, ", ".join(f"{k} in {v}" for k, v in manifest["roots"].items()) or "nothing to fetch")
    return manifest
