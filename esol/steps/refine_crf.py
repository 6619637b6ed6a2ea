"""CRF refinement: CAM seeds -> pseudo-label PNGs, in parallel over the rule's threads."""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

from esol import checkpoint
from esol.cams import load_cam
from esol.config import Params, RefineCrfConfig
from esol.crf import pseudo_label
from esol.data.layout import Dataset
from esol.io import atomic_dir, write_label_png
from esol.progress import tqdm

log = logging.getLogger("esol.refine_crf")

OUTPUTS = ("out_dir",)


def _refine_one(job: tuple[Path, Path, Path, Path, RefineCrfConfig]) -> str:
    data, cams, out, image_id, cfg = job
    dataset = Dataset(data)
    keys, cam = load_cam(cams / f"{image_id}.npz")
    label = pseudo_label(dataset.image(str(image_id)), keys, cam, cfg)
    write_label_png(out / f"{image_id}.png", label)
    return str(image_id)


def run(params: Params, *, data: Path, cams: Path, split: str, out_dir: Path, threads: int = 1) -> dict:
    """Refine the CAMs in CAMS for SPLIT of DATA into pseudo-label PNGs in OUT_DIR.

    Labels: class ids, 0 = background, 255 = uncertain. THREADS worker processes; images already
    done in ``OUT_DIR.partial`` (an interrupted run) are skipped.
    """
    dataset = Dataset(data)
    cam_files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(cams).glob("*.npz"))
    with atomic_dir(out_dir, checkpoint.fingerprint(params.refine_crf, split, cam_files)) as partial:
        todo = [i for i in dataset.ids(split) if not (partial / f"{i}.png").is_file()]
        jobs = [(Path(data), Path(cams), partial, i, params.refine_crf) for i in todo]
        log.info("%s: %d images to refine with %d process(es)", split, len(todo), threads)
        bar = tqdm(total=len(jobs), desc=f"CRF {out_dir.name}", mininterval=5)
        if threads > 1 and len(jobs) > 1:
            with mp.get_context("fork").Pool(threads) as pool:
                for _ in pool.imap_unordered(_refine_one, jobs, chunksize=8):
                    bar.update()
        else:
            for job in jobs:
                _refine_one(job)
                bar.update()
        bar.close()
    return {"split": split, "images": len(dataset.ids(split))}
