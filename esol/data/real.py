"""The real datasets: where their archives live, and how they become the common layout.

Two steps, so that the one needing the internet can run where the internet is (a login node):
``download(name, downloads)`` (the ``download_data`` step) finds or fetches, verifies and extracts
every archive and returns a manifest of the extracted trees; ``convert(manifest, out_dir)`` (the
``prepare_data`` step) writes the common layout from them (:mod:`esol.data.voc`,
:mod:`esol.data.coco`) and opens no connection. ``prepare`` does both. For each archive, in this order:

1. ``ESOL_DATA_DIR`` (one directory, or several separated by ``:``) holding the archive's
   already-extracted tree, e.g. ``$ESOL_DATA_DIR/VOCdevkit/VOC2012``,
   ``$ESOL_DATA_DIR/benchmark_RELEASE/dataset``, ``$ESOL_DATA_DIR/{train2014,val2014,annotations}``.
   Used as is and read only; nothing is downloaded, nothing checksummed.
2. ``<downloads>/extracted/<archive>/``, extracted by an earlier run (marker file). The archive
   itself may have been deleted since.
3. ``<downloads>/<filename>``, put there by hand or by an earlier run: verified (size, md5), then
   extracted.
4. Downloaded from its mirrors (see :mod:`esol.data.download`), verified, then extracted; not
   when ``ESOL_DATA_DIR`` is set (the user said where the data is: a tree missing from it is an
   error naming the directories and the path expected), and not for an optional archive (SBD
   unless ``dataset.sbd: true``), which is then left out.

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
from esol.infra.io import InputError

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


def optional_archives(name: str, sbd: bool) -> tuple[str, ...]:
    """Archives of dataset ``name`` used when found but never downloaded: SBD unless ``dataset.sbd``."""
    return ("sbd",) if name == "voc12" and not sbd else ()


def locate(
    archives: dict[str, Archive], downloads: Path, optional: tuple[str, ...] = ()
) -> tuple[dict[str, Path], list[dict]]:
    """Root of each archive's extracted tree (fetching and extracting what is missing), and provenance.

    Archives in ``optional`` that are neither in ``ESOL_DATA_DIR`` nor extracted nor downloaded
    already are left out of the result.
    """
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
        elif (downloads / archive.remote.filename).is_file():
            pending[key] = archive  # placed by hand or by an earlier run: verified, no connection
        elif key in optional:
            log.info("%s: not found locally; optional, not downloaded (dataset.sbd)", archive.remote.filename)
        elif data_dirs():
            looked = ", ".join(str(d / archive.probe) for d in data_dirs())
            raise InputError(
                f"{DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]}: no extracted {archive.remote.filename} there "
                f"(looked for {looked}). Point {DATA_DIR_ENV} at the directory holding {archive.probe.split('/')[0]}/, "
                f"or put {archive.remote.filename} into {downloads}, or unset {DATA_DIR_ENV} to download it."
            )
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


def download(name: str, downloads: Path, sbd: bool = True) -> dict:
    """Find or fetch, verify and extract every archive of dataset ``name``; return the manifest
    (``dataset``, ``roots``: archive key -> extracted tree, ``sources``, ``downloads``)."""
    if name not in REGISTRY:
        raise InputError(f"unknown dataset {name!r}; known real datasets: {', '.join(REGISTRY)}")
    roots, sources = locate(REGISTRY[name], Path(downloads), optional_archives(name, sbd))
    return {
        "dataset": name,
        "roots": {key: str(Path(root).absolute()) for key, root in roots.items()},
        "sources": sources,
        "downloads": str(Path(downloads).absolute()),
    }


def prepare(name: str, out_dir: Path, downloads: Path, sbd: bool = True, processes: int | None = None) -> None:
    """Fetch (or find) dataset ``name`` and write it into ``out_dir`` in the common layout."""
    convert(download(name, downloads, sbd), out_dir, processes=processes)


def convert(
    manifest: dict, out_dir: Path, source: str = "the download manifest", processes: int | None = None
) -> None:
    """Write the dataset of a :func:`download` manifest into ``out_dir``; opens no connection.
    ``processes`` paint the masks (None: :func:`workers`)."""
    name = manifest.get("dataset")
    if name not in REGISTRY:
        raise InputError(f"{source}: unknown dataset {name!r}; known real datasets: {', '.join(REGISTRY)}")
    roots = {key: Path(root) for key, root in manifest.get("roots", {}).items()}
    for key, archive in REGISTRY[name].items():
        if key in roots and not (roots[key] / archive.probe).exists():
            raise InputError(f"{source}: {roots[key] / archive.probe} is gone; run download_data again")
    missing = [k for k in REGISTRY[name] if k not in roots and k not in optional_archives(name, sbd=False)]
    if missing:
        raise InputError(f"{source}: no tree for {', '.join(missing)}; run download_data again")
    downloads, sources = Path(manifest["downloads"]), manifest.get("sources", [])
    if name == "voc12":
        from esol.data.voc import prepare_voc

        sbd_root = roots["sbd"] / SBD_ROOT if "sbd" in roots else None
        sizes = prepare_voc(out_dir, roots["voc"] / VOC_ROOT, sbd_root, name=name, sources=sources)
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
            workers=processes or workers(),
            name=name,
            sources=sources,
        )
    else:  # a registry entry without a converter
        raise InputError(f"dataset {name!r} has archives but no converter")
    log.info("%s prepared in %s: %s", name, out_dir, sizes)
