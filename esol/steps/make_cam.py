"""CAM inference: multi-scale + flip CAMs of a variant's classifier, one file per image."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from esol.cams import multiscale_cams, quantise, save_cam
from esol.classifier import load_model
from esol.config import Params
from esol.data.layout import Dataset
from esol.data.loaders import InferenceSet, collate_inference
from esol.io import atomic_dir
from esol.progress import tqdm
from esol.runtime import make_runtime

log = logging.getLogger("esol.make_cam")

OUTPUTS = ("out_dir",)


def run(params: Params, *, data: Path, model: Path, split: str, out_dir: Path) -> dict:
    """Compute CAMs with MODEL for every image of SPLIT in DATA, one ``<id>.npz`` in OUT_DIR.

    Scales and flips come from ``make_cam``; only the image's positive classes are kept, each
    max-normalised. Images already done in ``OUT_DIR.partial`` (an interrupted run) are skipped.
    """
    cfg = params.make_cam
    runtime = make_runtime(params.runtime, params.dataset.seed)
    dataset = Dataset(data)
    net = load_model(params, dataset, model).to(runtime.device).eval()
    net.use_offsets = True
    with atomic_dir(out_dir) as partial:
        todo = [i for i in dataset.ids(split) if not (partial / f"{i}.npz").is_file()]
        log.info("%s: %d images to do, %d already done", split, len(todo), len(dataset.ids(split)) - len(todo))
        loader = DataLoader(
            InferenceSet(dataset, todo),
            batch_size=cfg.batch_size,
            num_workers=params.runtime.num_workers,
            collate_fn=collate_inference,
        )
        with tqdm(total=len(todo), desc=f"CAMs {out_dir.name}", mininterval=5) as bar:
            for ids, images in loader:
                by_size: dict[tuple, list[int]] = defaultdict(list)
                for index, image in enumerate(images):
                    by_size[image.shape[:2]].append(index)
                for members in by_size.values():
                    cams = (
                        multiscale_cams(
                            net, [images[i] for i in members], cfg.scales, cfg.flip, runtime.device, runtime.autocast()
                        )
                        .cpu()
                        .numpy()
                    )
                    for row, index in enumerate(members):
                        keys = np.asarray(dataset.labels(ids[index]), dtype=np.int64)
                        save_cam(partial / f"{ids[index]}.npz", keys, quantise(cams[row], keys))
                bar.update(len(ids))
    return {"split": split, "images": len(dataset.ids(split))}
