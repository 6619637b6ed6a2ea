"""CAM inference: multi-scale + flip CAMs of a variant's classifier, one file per image."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from esol.data.layout import Dataset
from esol.data.loaders import InferenceSet, collate_inference, prefetch
from esol.inference.cams import multiscale_cams, quantise_batch, save_cam
from esol.infra import distributed
from esol.infra import shards as shards_of
from esol.infra.config import Params
from esol.infra.cpus import job_threads
from esol.infra.io import atomic_dir
from esol.infra.progress import tqdm
from esol.infra.runtime import make_runtime
from esol.training import checkpoint
from esol.training.classifier import load_model

log = logging.getLogger("esol.make_cam")

OUTPUTS = ("out_dir",)


def run(
    params: Params,
    *,
    data: Path,
    model: Path,
    split: str,
    out_dir: Path,
    threads: int = 0,
    shard: int = 0,
    shards: int = 1,
) -> dict:
    """Compute CAMs with MODEL for every image of SPLIT in DATA, one ``<id>.npz`` in OUT_DIR.

    Scales and flips come from ``make_cam``; only the image's positive classes are kept, each
    max-normalised. Images already done in ``OUT_DIR.partial`` (an interrupted run) are skipped.
    With several devices (``esol --gpus N``) the batches are dealt to one process per device; the
    files are the same as one process writes. THREADS (the job's; 0: the usable CPUs) caps the
    loader's worker processes, ``runtime.num_workers``, at one fewer than the job has. SHARD of
    SHARDS: only every SHARDS-th batch from SHARD on (``make_cam.shards``; the batches are those
    of one job, so the gathered shards hold the same files).
    """
    cfg = params.make_cam
    loader_workers = min(params.runtime.num_workers, job_threads(threads) - 1)
    world, device_type = distributed.plan(params.runtime.device)
    dataset = Dataset(data)
    ids = dataset.ids(split)
    # Fixed batches, whatever the number of processes or shards: a CAM depends only on its batch.
    batches = shards_of.take([ids[i : i + cfg.batch_size] for i in range(0, len(ids), cfg.batch_size)], shard, shards)
    stamp = checkpoint.fingerprint(cfg, params.model, split, checkpoint.file_digest(model), shard, shards)
    with atomic_dir(out_dir, stamp) as partial:
        todo = [[i for i in batch if not (partial / f"{i}.npz").is_file()] for batch in batches]
        todo = [batch for batch in todo if batch]
        mine = sum(len(batch) for batch in batches)
        done = mine - sum(len(batch) for batch in todo)
        where = f" (shard {shard} of {shards}: {len(batches)} batches)" if shards > 1 else ""
        log.info("%s%s: %d images to do, %d already done", split, where, mine - done, done)
        workers = min(world, len(todo))
        if workers > 1:
            log.info("%d batches dealt to %d processes on %s", len(todo), workers, device_type)
            distributed.launch(
                write_cams,
                params,
                data,
                model,
                todo,
                partial,
                out_dir.name,
                loader_workers,
                world=workers,
                device_type=device_type,
                process_group=False,
            )
        else:
            write_cams(params, data, model, todo, partial, out_dir.name, loader_workers)
    return {"split": split, "images": mine}


def write_cams(
    params: Params, data: Path, model: Path, batches: list[list[str]], out: Path, name: str, workers: int = 0
) -> int:
    """Write the CAM files of ``batches`` into ``out``, reading with ``workers`` loader processes;
    rank r of w processes takes batches r, r+w, ..."""
    cfg = params.make_cam
    ctx = distributed.current()
    my_batches = batches[ctx.rank :: ctx.world]
    mine = [image_id for batch in my_batches for image_id in batch]
    ends = np.cumsum([len(batch) for batch in my_batches]).tolist()
    positions = [list(range(end - len(batch), end)) for batch, end in zip(my_batches, ends, strict=True)]
    runtime = make_runtime(params.runtime, params.dataset.seed)
    dataset = Dataset(data)
    net = load_model(params, dataset, model).to(runtime.device).eval()
    net.use_offsets = True
    if runtime.channels_last:
        net.to(memory_format=torch.channels_last)
    loader = DataLoader(  # exactly the given batches: a CAM depends on the batch it was computed in
        InferenceSet(dataset, mine), batch_sampler=positions, num_workers=workers, collate_fn=collate_inference
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
