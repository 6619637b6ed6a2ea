"""Folder datasets: reading and validating 10,000 labelled images' metadata (esol.data.folder).

A folder of N images (default 10,000; JPEG and PNG, VOC-like sizes around 500x375, two to five
classes each, ``labels.csv``, ``classes.txt``, no ``splits/``: the seeded split is drawn) is
written once; then, interleaved:

* ``read``: :func:`esol.data.folder.read_folder`, everything prepare_data validates: the class
  list, the csv, the listing of ``images/``, each image's header (size, format, mode), the split;
* ``bare``: the least any reader does: ``os.scandir``, ``csv.reader`` and one ``PIL.Image.open``
  (header only) per image.

Figures: seconds of ``read`` for the N images (target <= 10 s on 2 cores, as the issue sets it);
``read`` over ``bare`` (the validation's own overhead); seconds of the whole prepare (read + the
layout's files + ``Dataset.check``); and, with masks on a third of the images (decoded: their
values are checked), seconds of ``read``.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import common
from esol.data.folder import write_labels

TARGET_SECONDS = "<= 10"
TARGET_OVERHEAD = "<= 1.5"
CLASSES = [f"class{i:02d}" for i in range(1, 21)]
SIZES = [(500, 375), (375, 500), (500, 333), (480, 360), (640, 427), (353, 500)]


def template_images() -> list[tuple[str, bytes, tuple[int, int]]]:
    """Encoded images (suffix, bytes, size) the folder's files are copies of: a header costs the same
    whatever the pixels."""
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate(SIZES * 2):
        pixels = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((w, h))
        buffer = io.BytesIO()
        suffix = ".png" if i % 4 == 3 else ".jpg"
        image.save(buffer, format="PNG" if suffix == ".png" else "JPEG", quality=90)
        out.append((suffix, buffer.getvalue(), (w, h)))
    return out


def write_folder(root: Path, count: int, masked_every: int = 0) -> Path:
    """A folder dataset of ``count`` images (masks on every ``masked_every``-th image, 0: none)."""
    rng = np.random.default_rng(1)
    templates = template_images()
    (root / "images").mkdir(parents=True)
    if masked_every:
        (root / "masks").mkdir()
    masks: dict[tuple[int, int], bytes] = {}
    rows = []
    for i in range(count):
        suffix, data, size = templates[i % len(templates)]
        name = f"im_{i:06d}{suffix}"
        (root / "images" / name).write_bytes(data)
        labels = rng.choice(len(CLASSES), size=int(rng.integers(1, 4)), replace=False)
        rows.append((name, [CLASSES[c] for c in sorted(labels)]))
        if masked_every and i % masked_every == 0:
            if size not in masks:
                label = np.zeros((size[1], size[0]), np.uint8)
                label[size[1] // 4 : size[1] // 2, size[0] // 4 : size[0] // 2] = 1 + int(labels[0])
                buffer = io.BytesIO()
                Image.fromarray(label, mode="L").save(buffer, format="PNG")
                masks[size] = buffer.getvalue()
            (root / "masks" / f"im_{i:06d}.png").write_bytes(masks[size])
    write_labels(root, rows, CLASSES)
    return root


def bare_read(root: Path) -> int:
    """scandir + csv + one header read per image: the floor any validation stands on."""
    with os.scandir(root / "images") as entries:
        on_disk = {e.name for e in entries}
    sizes = 0
    with open(root / "labels.csv", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for name, _labels in reader:
            if name in on_disk:
                with Image.open(root / "images" / name) as img:
                    sizes += img.size[0]
    return sizes


def main(argv: list[str] | None = None) -> int:
    from esol.data.folder import prepare_folder, read_folder
    from esol.data.layout import Dataset
    from esol.infra.config import FolderConfig

    ap = common.parser(__doc__)
    ap.add_argument("--images", type=int, help="images in the folder (default 10000, quick 200)")
    args = ap.parse_args(argv)
    count = args.images or (200 if args.quick else 10_000)
    reps = common.reps(args, default=3)
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as tmp:
        tmp_path = Path(tmp)
        plain = write_folder(tmp_path / "plain", count)
        masked = write_folder(tmp_path / "masked", count, masked_every=3)
        cfg = FolderConfig(root=str(plain), val_fraction=0.1, unscored_train_sample=64)
        masked_cfg = FolderConfig(root=str(masked), val_fraction=0.1, unscored_train_sample=64)
        times = common.interleaved(
            {"read": lambda: read_folder(cfg, seed=0), "bare": lambda: bare_read(plain)}, reps, warmup=True
        )
        # CPU seconds too: the wall time on an idle core (the machine may be shared with other jobs)
        cpu = {"read": [], "prepare": [], "masked": []}
        wall = {"prepare": [], "masked": []}
        for rep in range(reps):
            out = tmp_path / f"prepared_{rep}"
            jobs = {
                "read": lambda: read_folder(cfg, seed=0),
                "prepare": lambda out=out: (prepare_folder(out, cfg, seed=0), Dataset(out).check()),
                "masked": lambda: read_folder(masked_cfg, seed=0),
            }
            for name, job in jobs.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                job()
                cpu[name].append(time.process_time() - cpu_start)
                if name in wall:
                    wall[name].append(time.perf_counter() - start)
        masks = len(read_folder(masked_cfg, seed=0).masked)
    read, bare = common.stats(times["read"]), common.stats(times["bare"])
    overhead = common.ratios(times["read"], times["bare"])
    prepare, with_masks = common.stats(wall["prepare"]), common.stats(wall["masked"])
    read_cpu, prepare_cpu, masked_cpu = (common.stats(cpu[name]).median for name in ("read", "prepare", "masked"))
    figures = [
        common.Figure(
            "folder.read_seconds",
            read.median,
            TARGET_SECONDS,
            detail=f"{count} images, {count / read.median:.0f} images/s: csv, classes, listing, headers, split",
            spread=f"[{read.low:.3g}, {read.high:.3g}]",
        ),
        common.Figure(
            "folder.read_cpu_seconds",
            read_cpu,
            TARGET_SECONDS,
            detail="the same read's CPU time (median): its wall time on an idle core",
        ),
        common.Figure(
            "folder.read_over_bare",
            overhead.median,
            TARGET_OVERHEAD,
            detail=f"read {read.median:.3g} s vs bare scandir + csv + header reads {bare.median:.3g} s",
            spread=f"[{overhead.low:.3g}, {overhead.high:.3g}]",
        ),
        common.Figure(
            "folder.prepare_seconds",
            prepare.median,
            TARGET_SECONDS,
            detail=f"read + layout files (splits, labels, image files, meta) + Dataset.check; {prepare_cpu:.3g} CPU s",
            spread=f"[{prepare.low:.3g}, {prepare.high:.3g}]",
        ),
        common.Figure(
            "folder.read_with_masks_seconds",
            with_masks.median,
            TARGET_SECONDS,
            detail=f"{masks} masks decoded and checked; {masked_cpu:.3g} CPU s",
            spread=f"[{with_masks.low:.3g}, {with_masks.high:.3g}]",
        ),
    ]
    common.report(
        "Folder datasets: metadata of N labelled images",
        args,
        figures,
        images=count,
        read_seconds=read,
        cpu_seconds={name: round(common.stats(v).median, 3) for name, v in cpu.items()},
        bare_seconds=bare,
        prepare_seconds=prepare,
        read_with_masks_seconds=with_masks,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
