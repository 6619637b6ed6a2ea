"""CAM inference: multi-scale + flip CAMs of a variant's classifier, one file per image."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from esol import checkpoint, distributed
from esol.cams import multiscale_cams, quantise_batch, save_cam
from esol.classifier import load_model
from esol.config import Params
from esol.data.layout import Dataset
from esol.data.loaders import InferenceSet, collate_inference, prefetch
from esol.io import atomic_dir
from esol.progress import tqdm
from esol.runtime import make_runtime

log = logging.getLogger("esol.make_cam")

OUTPUTS = ("out_dir",)


def run(params: Params, *, data: Path, model: Path, split: str, out_dir: Path) -> dict:
    """Compute CAMs with MODEL for every image of SPLIT in DATA, one ``<id>.npz`` in OUT_DIR.

    Scales and flips come from ``make_cam``; only the image's positive classes are kept, each
    max-normalised. Images already done in ``OUT_DIR.partial`` (an interrupted run) are skipped.
    With several devices (``esol --gpus N``) the batches are dealt to one process per device; the
    files are the same as one process writes.
    """
    cfg = params.make_cam
    world, device_type = distributed.plan(params.runtime.device)
    dataset = Dataset(data)
    stamp = checkpoint.fingerprint(cfg, params.model, split, checkpoint.file_digest(model))
    with atomic_dir(out_dir, stamp) as partial:
        todo = [i for i in dataset.ids(split) if not (partial / f"{i}.npz").is_file()]
        log.info("%s: %d images to do, %d already done", split, len(todo), len(dataset.ids(split)) - len(todo))
        # Fixed batches, whatever the number of processes: a CAM depends only on its batch.
        batches = [todo[start : start + cfg.batch_size] for start in range(0, len(todo), cfg.batch_size)]
        workers = min(world, len(batches))
        if workers > 1:
            log.info("%d batches dealt to %d processes on %s", len(batches), workers, device_type)
            distributed.launch(
                write_cams,
                params,
                data,
                model,
                batches,
                partial,
                out_dir.name,
                world=workers,
                device_type=device_type,
                process_group=False,
            )
        else:
            write_cams(params, data, model, batches, partial, out_dir.name)
    return {"split": split, "images": len(dataset.ids(split))}


def write_cams(params: Params, data: Path, model: Path, batches: list[list[str]], out: Path, name: str) -> int:
    """Write the CAM files of ``batches`` into ``out``; rank r of w processes takes batches r, r+w, ..."""
    cfg = params.make_cam
    ctx = distributed.current()
    mine = [image_id for batch in batches[ctx.rank :: ctx.world] for image_id in batch]
    runtime = make_runtime(params.runtime, params.dataset.seed)
    dataset = Dataset(data)
    net = load_model(params, dataset, model).to(runtime.device).eval()
    net.use_offsets = True
    if runtime.channels_last:
        net.to(memory_format=torch.channels_last)
    workers = params.runtime.num_workers
    loader = DataLoader(
        InferenceSet(dataset, mine), batch_size=cfg.batch_size, num_workers=workers, collate_fn=collate_inference
    )
    # Off the critical path: the next batch is read ahead (worker processes, or one thread),
    # and files are written by a thread while the model runs on the next batch.
    batches = loader if workers > 0 else prefetch(loader)
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="cam-writer") as writer,
        tqdm(total=len(mine), desc=f"CAMs {name}", mininterval=5, disable=not ctx.is_main) as bar,
    ):
        pending: deque[Future] = deque()
        for ids, images in batches:
            by_size: dict[tuple, list[int]] = defaultdict(list)
            for index, image in enumerate(images):
                by_size[image.shape[:2]].append(index)
            for members in by_size.values():
                cams = multiscale_cams(
                    net,
                    [images[i] for i in members],
                    cfg.scales,
                    cfg.flip,
                    runtime.device,
                    runtime.autocast(),
                    channels_last=runtime.channels_last,
                )
                keys = [np.asarray(dataset.labels(ids[i]), dtype=np.int64) for i in members]
                for index, k, planes in zip(members, keys, quantise_batch(cams, keys), strict=True):
                    pending.append(writer.submit(save_cam, out / f"{ids[index]}.npz", k, planes))
            while len(pending) > 2 * cfg.batch_size:  # bound the backlog; a failed write stops the step
                pending.popleft().result()
            bar.update(len(ids))
        for future in pending:
            future.result()
    return len(mine)
