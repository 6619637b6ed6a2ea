"""CRF refinement: CAM seeds -> pseudo-label PNGs, in parallel over the rule's threads."""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

from esol.data.layout import Dataset
from esol.inference.cams import load_cam
from esol.infra import shards as shards_of
from esol.infra.config import Params, RefineCrfConfig
from esol.infra.cpus import job_threads
from esol.infra.io import atomic_dir, read_image, write_label_png
from esol.infra.progress import tqdm
from esol.refine.crf import pseudo_label
from esol.training import checkpoint

log = logging.getLogger("esol.refine_crf")

OUTPUTS = ("out_dir",)


def _refine_one(job: tuple[str, Path, Path, Path, RefineCrfConfig]) -> str:
    image_id, image_path, cam_path, out_path, cfg = job
    keys, cam = load_cam(cam_path)
    label = pseudo_label(read_image(image_path), keys, cam, cfg)
    write_label_png(out_path, label)
    return image_id


def refine_jobs(dataset: Dataset, ids: list[str], cams: Path, out: Path, cfg: RefineCrfConfig) -> list[tuple]:
    """One job per image for :func:`_refine_one`: id, image, CAM file, label PNG, settings."""
    return [(i, dataset.image_path(i), cams / f"{i}.npz", out / f"{i}.png", cfg) for i in ids]


def _chunksize(jobs: int, processes: int) -> int:
    """Jobs per hand-out: a few chunks per process keep the processes evenly loaded to the end."""
    return max(1, min(8, jobs // (4 * processes)))


def run(
    params: Params,
    *,
    data: Path,
    cams: Path,
    split: str,
    out_dir: Path,
    variant: str = "",
    threads: int = 0,
    shard: int = 0,
    shards: int = 1,
) -> dict:
    """Refine the CAMs in CAMS for SPLIT of DATA into pseudo-label PNGs in OUT_DIR.

    Labels: class ids, 0 = background, 255 = uncertain. VARIANT takes its thresholds from
    ``refine_crf.variant_thresholds`` when listed there. THREADS worker processes (0: one per
    usable CPU); images already done in ``OUT_DIR.partial`` (an interrupted run) are skipped.
    SHARD of SHARDS: only every SHARDS-th image from SHARD on (``refine_crf.shards``).
    """
    threads = job_threads(threads)
    dataset = Dataset(data)
    ids = shards_of.take(dataset.ids(split), shard, shards)
    cfg = params.refine_crf.for_variant(variant)
    cam_files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(cams).glob("*.npz"))
    with atomic_dir(out_dir, checkpoint.fingerprint(cfg, split, cam_files, shard, shards)) as partial:
        todo = [i for i in ids if not (partial / f"{i}.png").is_file()]
        jobs = refine_jobs(dataset, todo, Path(cams), partial, cfg)
        log.info(
            "%s: %d images to refine with %d process(es), thresholds fg %.2f / bg %.2f",
            split,
            len(todo),
            threads,
            cfg.fg_threshold,
            cfg.bg_threshold,
        )
        bar = tqdm(total=len(jobs), desc=f"CRF {out_dir.name}", mininterval=5)
        if threads > 1 and len(jobs) > 1:
            with mp.get_context("fork").Pool(threads) as pool:
                for _ in pool.imap_unordered(_refine_one, jobs, chunksize=_chunksize(len(jobs), threads)):
                    bar.update()
        else:
            for job in jobs:
                _refine_one(job)
                bar.update()
        bar.close()
    return {"split": split, "images": len(ids)}
