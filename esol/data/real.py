"""The real datasets: where their archives live, and how they become the common layout.

``prepare(name, out_dir, downloads)`` finds or fetches every archive of the dataset, then converts
(:mod:`esol.data.voc`, :mod:`esol.data.coco`). For each archive, in this order:

1. ``ESOL_DATA_DIR`` (one directory, or several separated by ``:``) holding the archive's
   already-extracted tree, e.g. ``$ESOL_DATA_DIR/VOCdevkit/VOC2012``,
   ``$ESOL_DATA_DIR/benchmark_RELEASE/dataset``, ``$ESOL_DATA_DIR/{train2014,val2014,annotations}``.
   Used as is and read only; nothing is downloaded, nothing checksummed.
2. ``<downloads>/extracted/<archive>/``, extracted by an earlier run (marker file). The archive
   itself may have been deleted since.
3. ``<downloads>/<filename>``, put there by hand or by an earlier run: verified (size, md5), then
   extracted.
4. Downloaded from its mirrors (see :mod:`esol.data.download`), verified, then extracted.

All downloads of a dataset are verified before the first extraction starts. ``ESOL_PREPARE_WORKERS``
sets the processes that paint COCO masks (default: the usable CPUs, at most 8).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from esol.data.archive import extract, is_extracted
from esol.data.download import RemoteFile, fetch
from esol.io import InputError

log = logging.getLogger("esol.real")

DATA_DIR_ENV = "ESOL_DATA_DIR"
WORKERS_ENV = "ESOL_PREPARE_WORKERS"


@dataclass(frozen=True)
class Archive:
    """One archive of a dataset and the path (``probe``) that shows its extracted tree is present."""

    remote: RemoteFile
    probe: str

    @property
    def extract_name(self) -> str:
        """Directory under ``<downloads>/extracted`` the archive is unpacked into."""
        name = self.remote.filename
        for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name

    @property
    def marker_key(self) -> dict:
        return {"archive": self.remote.filename, "md5": self.remote.md5}


VOC_ROOT = "VOCdevkit/VOC2012"
SBD_ROOT = "benchmark_RELEASE/dataset"

REGISTRY: dict[str, dict[str, Archive]] = {
    "voc12": {
        "voc": Archive(
            RemoteFile(
                "VOCtrainval_11-May-2012.tar",
                urls=(
                    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                ),
                md5="6cd6e144f989b92b3379bac3b3de84fd",
                size=1_999_639_040,
                sha256="e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb",
            ),
            probe=f"{VOC_ROOT}/ImageSets/Segmentation/val.txt",
        ),
        "sbd": Archive(
            RemoteFile(
                "benchmark.tgz",
                urls=(
                    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
                ),
                md5="82b4d87ceb2ed10f6038a1cba92111cb",  # about 1.4 GB; exact size not recorded
            ),
            probe=f"{SBD_ROOT}/train.txt",
        ),
    },
    "coco14": {
        "train": Archive(
            RemoteFile(
                "train2014.zip",
                urls=("http://images.cocodataset.org/zips/train2014.zip",),
                md5="0da8c0bd3d6becc4dcb32757491aca88",
                size=13_510_573_713,
            ),
            probe="train2014",
        ),
        "val": Archive(
            RemoteFile(
                "val2014.zip",
                urls=("http://images.cocodataset.org/zips/val2014.zip",),
                md5="a3d79f5ed8d289b7a7554ce06a5782b3",
                size=6_645_013_297,
            ),
            probe="val2014",
        ),
        "annotations": Archive(
            RemoteFile(
                "annotations_trainval2014.zip",
                urls=("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",),
                md5="0a379cfc70b0e71301e0f377548639bd",
                size=252_872_794,
            ),
            probe="annotations/instances_train2014.json",
        ),
    },
}


def data_dirs() -> list[Path]:
    """Directories named by ``ESOL_DATA_DIR`` (``os.pathsep``-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]


def workers() -> int:
    """Processes for mask painting: ``ESOL_PREPARE_WORKERS`` or the usable CPUs (at most 8)."""
    value = os.environ.get(WORKERS_ENV)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise InputError(f"{WORKERS_ENV}={value!r}: expected a whole number") from None
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def locate(archives: dict[str, Archive], downloads: Path) -> tuple[dict[str, Path], list[dict]]:
    """Root of each archive's extracted tree (fetching and extracting what is missing), and provenance."""
    downloads = Path(downloads)
    roots: dict[str, Path] = {}
    sources: list[dict] = []
    pending: dict[str, Archive] = {}
    for key, archive in archives.items():
        found = next((d for d in data_dirs() if (d / archive.probe).exists()), None)
        dest = downloads / "extracted" / archive.extract_name
        if found is not None:
            log.info(
                "%s: using the extracted tree in %s (%s), not downloading", archive.remote.filename, found, DATA_DIR_ENV
            )
            roots[key] = found
            sources.append({"archive": archive.remote.filename, "from": DATA_DIR_ENV, "verified": False})
        elif is_extracted(dest, archive.marker_key) and (dest / archive.probe).exists():
            log.info("%s: already extracted in %s", archive.remote.filename, dest)
            roots[key] = dest
            sources.append({"archive": archive.remote.filename, "md5": archive.remote.md5, "verified": True})
        else:
            pending[key] = archive
    # Every archive is verified before the first extraction starts.
    files = {key: fetch(archive.remote, downloads) for key, archive in pending.items()}
    for key, archive in pending.items():
        dest = extract(files[key], downloads / "extracted" / archive.extract_name, key=archive.marker_key)
        if not (dest / archive.probe).exists():
            raise InputError(f"{files[key]}: extracted into {dest}, but {archive.probe} is not in it")
        roots[key] = dest
        sources.append({"archive": archive.remote.filename, "md5": archive.remote.md5, "verified": True})
    return roots, sources


def prepare(name: str, out_dir: Path, downloads: Path) -> None:
    """Fetch (or find) dataset ``name`` and write it into ``out_dir`` in the common layout."""
    if name not in REGISTRY:
        raise InputError(f"unknown dataset {name!r}; known real datasets: {', '.join(REGISTRY)}")
    downloads = Path(downloads)
    roots, sources = locate(REGISTRY[name], downloads)
    if name == "voc12":
        from esol.data.voc import prepare_voc

        sizes = prepare_voc(out_dir, roots["voc"] / VOC_ROOT, roots["sbd"] / SBD_ROOT, name=name, sources=sources)
    elif name == "coco14":
        from esol.data.coco import prepare_coco

        ann = roots["annotations"] / "annotations"
        sizes = prepare_coco(
            out_dir,
            train_images=roots["train"] / "train2014",
            val_images=roots["val"] / "val2014",
            train_json=ann / "instances_train2014.json",
            val_json=ann / "instances_val2014.json",
            links_dir=downloads / "extracted" / "coco14_images",
            workers=workers(),
            name=name,
            sources=sources,
        )
    else:  # a registry entry without a converter
        raise InputError(f"dataset {name!r} has archives but no converter")
    log.info("%s prepared in %s: %s", name, out_dir, sizes)
