"""``esol predict``: a trained model applied to new images (no pipeline step, no dataset needed).

``esol predict --model results/models/seg.pt --images DIR --out DIR [--overlay]`` writes one label
PNG (VOC palette, class ids as in the model's class list) per image at the image's own size, and
with ``--overlay`` a JPEG of the image with the labels blended in (``DIR/overlay/<stem>.jpg``).
Inference is eval_seg's: multi-scale (``--scales``, default 1.0) with horizontal flips, images of
one size batched together, on a GPU when one is visible (``runtime.device``).

``esol predict --cams --model results/models/esol.pt ...`` writes the classifier's CAMs instead:
``<stem>.npz`` as make_cam writes them (``keys``: every class id, ``cams``: max-normalised uint8
at the image's size, at ``make_cam.scales`` and flips) plus ``scores`` (the classifier's
probability per class); ``--overlay`` draws the CAM of the classes scored >= 0.5 (else the top one).

The net is rebuilt from the settings its model file records (``model``, ``train_seg``; files of
older versions: from ``--params``, which also gives the runtime and the default batch sizes).
Every input is checked before anything is written: a file that is no JPEG or PNG image, a model
file that is not the kind asked for, or a class list (``--classes``, a classes.txt) other than
the model's stops with one error (exit 2); each output is written atomically, so an interrupted
run leaves only complete files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from esol.data.folder import IMAGE_SUFFIXES, Problems, image_size, read_classes
from esol.infra.config import ConfigError, Params, load_params
from esol.infra.io import InputError, atomic_path, read_image, voc_palette, write_label_png
from esol.infra.logs import setup_logging
from esol.infra.progress import tqdm

log = logging.getLogger("esol.predict")

OVERLAY_DIR = "overlay"
OVERLAY_ALPHA = 0.5


@dataclasses.dataclass(frozen=True)
class NewImage:
    path: Path
    size: tuple[int, int]  # (width, height), from the header

    @property
    def stem(self) -> str:
        return self.path.stem


def find_images(paths: list[Path]) -> list[NewImage]:
    """The images named by ``paths`` (files, or directories: their non-hidden files), each checked to
    be a JPEG or PNG from its header; any other file is an error, as are two images of one stem."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    problems = Problems()
    images: list[NewImage] = []
    stems: dict[str, Path] = {}
    for file in files:
        if not file.name.lower().endswith(IMAGE_SUFFIXES):
            problems.add("not an image", file, None, "not a JPEG or PNG file (.jpg, .jpeg, .png)")
            continue
        if file.stem in stems:
            problems.add(
                "duplicate stem", file, None, f"{stems[file.stem].name} has the same stem (outputs would clash)"
            )
            continue
        stems[file.stem] = file
        size = image_size(file, problems)
        if size is not None:
            images.append(NewImage(file, size))
    problems.raise_if_any()
    if not images:
        raise InputError(f"{', '.join(map(str, paths))}: no JPEG or PNG image found")
    return images


def read_model_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, metadata) of a model file written by a training step."""
    from esol.training import checkpoint

    blob = checkpoint.safe_load(path)
    if not isinstance(blob, dict) or "model" not in blob:
        raise InputError(f"{path}: not an esol model file (no 'model' entry)")
    meta = blob.get("meta") or {}
    if "classes" not in meta:
        raise InputError(f"{path}: the model file names no classes (meta.classes); retrain it with this version")
    return blob["model"], meta


def check_kind(path: Path, meta: dict[str, Any], cams: bool) -> None:
    """A segmentation file (meta.arch) for labels, a classifier file (meta.stage) for --cams."""
    if cams and "stage" not in meta:
        raise InputError(
            f"{path}: a segmentation model ({meta.get('arch', 'no stage')}); --cams takes a classifier "
            "model file, e.g. results/models/esol.pt"
        )
    if not cams and "arch" not in meta:
        kind = f"a classifier model (stage {meta['stage']})" if "stage" in meta else "not a segmentation model"
        raise InputError(f"{path}: {kind}; predict takes results/models/seg.pt, or --cams for a classifier's CAMs")


def check_classes(path: Path, model_classes: list[str], classes_file: Path | None) -> None:
    """The model's foreground classes must be those of ``classes_file`` (a classes.txt), in order."""
    if classes_file is None:
        return
    expected = read_classes(classes_file)
    if model_classes[1:] != expected:
        raise InputError(
            f"{path}: the model was trained on classes {', '.join(model_classes[1:])}, "
            f"but {classes_file} lists {', '.join(expected)}"
        )


def batches(images: list[NewImage], batch_size: int) -> list[list[NewImage]]:
    """Same-sized images together (sorted by size), at most ``batch_size`` a batch."""
    ordered = sorted(images, key=lambda im: (im.size, str(im.path)))
    out: list[list[NewImage]] = []
    for image in ordered:
        if out and len(out[-1]) < batch_size and out[-1][0].size == image.size:
            out[-1].append(image)
        else:
            out.append([image])
    return out


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``colours`` (H, W, 3) blended over ``image``."""
    return (image * (1 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)


def write_overlay_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=90)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """A [0, 1] map as RGB in matplotlib's jet colour map."""
    from matplotlib import colormaps

    return (colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)


def _replaced(section: Any, saved: dict[str, Any]) -> Any:
    """``section`` with the values ``saved`` in a model file, for the keys it still has."""
    names = {f.name for f in dataclasses.fields(section)}
    return dataclasses.replace(
        section, **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    )


def _net_settings(params: Params, meta: dict[str, Any]) -> Params:
    """params with the architecture the model file records (``meta.settings``: model, train_seg; older
    files: ``meta.arch`` only, the rest from params), and no ImageNet download (the weights follow)."""
    saved = meta.get("settings") or {}
    model_cfg = _replaced(params.model, saved.get("model", {}))
    model_cfg = dataclasses.replace(model_cfg, pretrained=False, weights_file="")
    train_seg = _replaced(params.train_seg, saved.get("train_seg", {}))
    train_seg = dataclasses.replace(train_seg, arch=meta.get("arch", train_seg.arch))
    return dataclasses.replace(params, model=model_cfg, train_seg=train_seg)


def predict_labels(
    params: Params, model: Path, images: list[NewImage], out: Path, *, scales, flip: bool, batch_size: int, draw: bool
) -> int:
    """Write ``<stem>.png`` label maps (and overlays) of the segmentation net in ``model``."""
    from esol.infra.runtime import make_runtime
    from esol.segmentation.network import build_seg_model, predict
    from esol.training import checkpoint

    _, meta = read_model_file(model)
    settings = _net_settings(params, meta)
    net = build_seg_model(settings.train_seg, settings.model, len(meta["classes"]))
    checkpoint.load_model_state(net, model)
    runtime = make_runtime(params.runtime, params.dataset.seed)
    net.to(runtime.device).eval()
    palette = voc_palette()
    with tqdm(total=len(images), desc="predict", mininterval=2) as bar:
        for batch in batches(images, batch_size):
            pixels = [read_image(im.path) for im in batch]
            labels = predict(net, pixels, runtime.device, flip=flip, scales=tuple(scales))
            for image, rgb, label in zip(batch, pixels, labels, strict=True):
                write_label_png(out / f"{image.stem}.png", label)
                if draw:
                    write_overlay_jpeg(out / OVERLAY_DIR / f"{image.stem}.jpg", overlay(rgb, palette[label]))
            bar.update(len(batch))
    return len(images)


def predict_cams(
    params: Params, model: Path, images: list[NewImage], out: Path, *, scales, flip: bool, batch_size: int, draw: bool
) -> int:
    """Write ``<stem>.npz`` CAM files (make_cam's format, every class, plus ``scores``) of a classifier."""
    import torch

    from esol.data.loaders import normalize
    from esol.inference.cams import multiscale_cams, quantise_batch
    from esol.infra.io import save_npz
    from esol.infra.runtime import make_runtime
    from esol.method.model import ESOLNet
    from esol.training import checkpoint

    _, meta = read_model_file(model)
    settings = _net_settings(params, meta)
    net = ESOLNet(settings.model, len(meta["classes"]) - 1)
    checkpoint.load_model_state(net, model)
    net.clipped = bool(meta.get("clipped", True))
    net.use_offsets = True
    runtime = make_runtime(params.runtime, params.dataset.seed)
    net.to(runtime.device).eval()
    keys = np.arange(1, len(meta["classes"]), dtype=np.int64)
    with tqdm(total=len(images), desc="predict CAMs", mininterval=2) as bar:
        for batch in batches(images, batch_size):
            pixels = [read_image(im.path) for im in batch]
            cams = multiscale_cams(net, pixels, tuple(scales), flip, runtime.device, runtime.autocast())
            with torch.no_grad():
                x = torch.stack([normalize(p) for p in pixels]).to(runtime.device)
                scores = torch.sigmoid(net(x).logits.float()).cpu().numpy()
            planes = quantise_batch(cams, [keys] * len(batch))
            for image, rgb, cam, score in zip(batch, pixels, planes, scores, strict=True):
                save_npz(
                    out / f"{image.stem}.npz", keys=keys.astype(np.int16), cams=cam, scores=score.astype(np.float32)
                )
                if draw:
                    shown = np.flatnonzero(score >= 0.5) if (score >= 0.5).any() else [int(score.argmax())]
                    heat = cam[shown].max(axis=0).astype(np.float32) / 255.0
                    write_overlay_jpeg(out / OVERLAY_DIR / f"{image.stem}.jpg", overlay(rgb, heat_colours(heat)))
            bar.update(len(batch))
    return len(images)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="esol predict")
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", type=Path, required=True, help="results/models/seg.pt (or a classifier with --cams)")
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="image files or directories of them")
    parser.add_argument("--out", type=Path, required=True, help="directory for the outputs (created)")
    parser.add_argument("--overlay", action="store_true", help="also write overlay JPEGs into OUT/overlay/")
    parser.add_argument("--cams", action="store_true", help="the classifier's CAMs (npz) instead of label maps")
    parser.add_argument("--classes", type=Path, help="a classes.txt the model's classes must match")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help="inference scales (default: eval_seg's, 1.0; with --cams make_cam.scales)",
    )
    parser.add_argument("--no-flip", action="store_true", help="no horizontal-flip averaging")
    parser.add_argument("--batch-size", type=int, help="images a batch (default: eval_seg / make_cam batch_size)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: runtime.device")
    return parser


def run(args: argparse.Namespace) -> int:
    """Check every input, then write the predictions; returns the number of images."""
    params = load_params(args.params)
    if args.device:
        params = dataclasses.replace(params, runtime=dataclasses.replace(params.runtime, device=args.device))
    _, meta = read_model_file(args.model)
    check_kind(args.model, meta, args.cams)
    check_classes(args.model, list(meta["classes"]), args.classes)
    images = find_images(args.images)
    if args.cams:
        scales = args.scales or params.make_cam.scales
        flip = params.make_cam.flip and not args.no_flip
        batch_size, write = args.batch_size or params.make_cam.batch_size, predict_cams
    else:
        scales = args.scales or (1.0,)
        flip = not args.no_flip
        batch_size, write = args.batch_size or params.eval_seg.batch_size, predict_labels
    if batch_size < 1 or any(s <= 0 for s in scales):
        raise ConfigError("--batch-size and --scales must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    log.info("%d image(s) from %s -> %s (scales %s, flip %s)", len(images), args.model, args.out, list(scales), flip)
    done = write(
        params, args.model, images, args.out, scales=scales, flip=flip, batch_size=batch_size, draw=args.overlay
    )
    log.info("predicted %d image(s) into %s", done, args.out)
    return done


def main(argv: list[str] | None = None, *, logging_ready: bool = False) -> int:
    """``esol predict ...``; exit 2 on bad input. ``logging_ready``: the caller (esol's CLI) set up logging."""
    args = build_parser().parse_args(argv)
    if not logging_ready:
        setup_logging()
    try:
        run(args)
    except (ConfigError, InputError) as exc:
        log.error("predict failed: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
