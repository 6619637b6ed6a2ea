"""A small example folder dataset (``esol example-folder DIR``), in the format of :mod:`esol.data.folder`.

Images come from the synthetic generator (:mod:`esol.data.synthetic`) at varying sizes, saved
as JPEG and PNG (some greyscale), with a ``labels.csv``, a ``classes.txt`` and masks for a
share of them: a folder to try ``dataset.name: folder`` on, and the fixture of the folder tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from esol.data.folder import write_labels
from esol.data.synthetic import generate_sample, make_textures
from esol.infra.config import SyntheticConfig
from esol.infra.io import IGNORE_LABEL, InputError, atomic_dir, write_label_png

CLASS_NAMES = ("gear", "spring", "bolt", "nut", "washer", "rivet", "hinge", "clamp")


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What the example folder holds."""

    count: int = 10
    num_classes: int = 2
    masked_fraction: float = 1 / 3  # the first share of the images get a mask
    sizes: tuple[int, ...] = (64, 80, 96)  # image sides, cycled (non-square: width + 16)
    greyscale_every: int = 5  # every n-th image is saved greyscale (0: none)
    seed: int = 0


def _generator_config(spec: ExampleSpec, size: int) -> SyntheticConfig:
    return SyntheticConfig(
        image_size=size,
        num_classes=spec.num_classes,
        num_train_aug=spec.count,
        num_train=spec.count,
        num_val=1,
        max_objects=2,
        part_fraction=0.3,
        context_prob=0.5,
    )


def build_example(dest: str | Path, spec: ExampleSpec = ExampleSpec()) -> Path:
    """Write the example folder into ``dest`` (which must be absent or empty); returns ``dest``."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: exists and is not an empty directory")
    if spec.num_classes > len(CLASS_NAMES):
        raise InputError(f"the example has at most {len(CLASS_NAMES)} classes, {spec.num_classes} asked")
    textures = make_textures(spec.num_classes)
    classes = CLASS_NAMES[: spec.num_classes]
    n_masked = round(spec.masked_fraction * spec.count)
    with atomic_dir(dest) as partial:
        rows = []
        for index in range(spec.count):
            size = spec.sizes[index % len(spec.sizes)]
            image, mask, present = generate_sample(_generator_config(spec, size), spec.seed, index, textures)
            if index % 2:  # non-square: crop a band off the bottom
                image, mask = image[: size - 16], mask[: size - 16]
            stem = f"img_{index:04d}"
            grey = spec.greyscale_every and index % spec.greyscale_every == spec.greyscale_every - 1
            picture = Image.fromarray(image).convert("L") if grey else Image.fromarray(image)
            name = f"{stem}.png" if index % 3 == 2 else f"{stem}.jpg"
            (partial / "images").mkdir(exist_ok=True)
            picture.save(partial / "images" / name, **({"quality": 95} if name.endswith(".jpg") else {}))
            present = sorted(int(c) for c in np.unique(mask) if c not in (0, IGNORE_LABEL) and (mask == c).sum() >= 20)
            rows.append((name, [classes[c - 1] for c in present]))
            if index < n_masked:
                write_label_png(partial / "masks" / f"{stem}.png", mask)
        write_labels(partial, rows, list(classes))
    return dest


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="esol example-folder")
    parser.description = __doc__
    parser.add_argument("dest", type=Path, help="directory to create (absent or empty)")
    parser.add_argument("--count", type=int, default=10, help="images (default 10)")
    parser.add_argument("--classes", type=int, default=2, help="classes (default 2)")
    parser.add_argument("--masked-fraction", type=float, default=1 / 3, help="share of images with a mask")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = ExampleSpec(count=args.count, num_classes=args.classes, masked_fraction=args.masked_fraction, seed=args.seed)
    try:
        build_example(args.dest, spec)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"example folder dataset in {args.dest}: set dataset.name: folder and folder.root: {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
