"""IRN masks: a variant's CAMs propagated by a random walk over the trained IRN's boundaries."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from esol.data.layout import Dataset
from esol.data.loaders import normalize, prefetch
from esol.inference.cams import load_cam
from esol.infra.config import MakeSemSegConfig, Params
from esol.infra.io import atomic_dir, read_image, write_label_png
from esol.infra.progress import tqdm
from esol.infra.runtime import Runtime, make_runtime
from esol.refine.affinity import PairOffsets, pair_offsets
from esol.refine.irn import IRNet, build_irn, predict_boundary
from esol.refine.random_walk import random_walk, to_grid, walk_to_mask
from esol.training import checkpoint

log = logging.getLogger("esol.make_sem_seg")

OUTPUTS = ("out_dir",)


def load_irn(params: Params, path: Path) -> IRNet:
    """The IRN of a model file written by train_irn (architecture checked against params)."""
    model = build_irn(params.model, params.train_irn.train_backbone)
    checkpoint.load_model_state(model, path)
    return model.eval()


def sem_seg_mask(
    model: IRNet,
    image: np.ndarray,
    keys: np.ndarray,
    cams: np.ndarray,
    pairs: PairOffsets,
    cfg: MakeSemSegConfig,
    runtime: Runtime,
) -> np.ndarray:
    """One image's mask (H, W) uint8: boundaries from IRN, CAMs (K, H, W) walked on the stride-4
    grid, upsampled, background ``cfg.bg_threshold`` in front, argmax."""
    size = image.shape[:2]
    if len(keys) == 0:
        return np.zeros(size, dtype=np.uint8)
    with runtime.autocast():
        boundary = predict_boundary(model, runtime.to_device(normalize(image)))
    scores = to_grid(torch.from_numpy(cams).to(runtime.device))
    walked = random_walk(scores, boundary.float(), pairs, cfg.beta, cfg.exp_times)
    return walk_to_mask(walked, keys, size, cfg.bg_threshold)


def run(params: Params, *, data: Path, cams: Path, model: Path, split: str, out_dir: Path) -> dict:
    """Write a pseudo mask PNG (VOC palette, class ids, no uncertain band) per image of SPLIT in
    DATA into OUT_DIR: the CAMs in CAMS walked over the boundaries of the IRN in MODEL.

    Images already done in ``OUT_DIR.partial`` (an interrupted run) are skipped.
    """
    cfg = params.make_sem_seg
    dataset = Dataset(data)
    runtime = make_runtime(params.runtime, params.dataset.seed)
    net = load_irn(params, model).to(runtime.device)
    pairs = pair_offsets(cfg.radius)
    cam_files = sorted((p.name, p.stat().st_size) for p in Path(cams).glob("*.npz"))
    stamp = checkpoint.fingerprint(cfg, split, checkpoint.file_digest(model), cam_files)
    with atomic_dir(out_dir, stamp) as partial:
        todo = [i for i in dataset.ids(split) if not (partial / f"{i}.png").is_file()]
        log.info(
            "%s: %d images to do, %d already done; walk radius %d, beta %g, 2^%d steps, background %.2f",
            split,
            len(todo),
            len(dataset.ids(split)) - len(todo),
            cfg.radius,
            cfg.beta,
            cfg.exp_times,
            cfg.bg_threshold,
        )

        def read(image_id: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
            keys, planes = load_cam(Path(cams) / f"{image_id}.npz")
            return image_id, read_image(dataset.image_path(image_id)), keys, planes

        # Reading the next image and writing the last mask overlap with the walk on this one.
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mask-writer") as writer,
            tqdm(total=len(todo), desc=f"IRN masks {out_dir.name}", mininterval=5) as bar,
        ):
            pending = []
            for image_id, image, keys, planes in prefetch(map(read, todo)):
                mask = sem_seg_mask(net, image, keys, planes, pairs, cfg, runtime)
                pending.append(writer.submit(write_label_png, partial / f"{image_id}.png", mask))
                if len(pending) > 8:
                    pending.pop(0).result()
                bar.update()
            for future in pending:
                future.result()
    return {"split": split, "images": len(dataset.ids(split))}
