"""Storage: bytes of the stored CAMs over IRN's float32 per-image format, and the seed mIoU they give.

One multi-scale + flip CAM computation per image (``esol.inference.cams.multiscale_cams``, as make_cam
runs it), written twice: as make_cam writes it (``esol.inference.cams.quantise`` + ``save_cam``: uint8,
max-normalised, image size, npz) and as IRN does (``np.save`` of a dict with ``keys``, ``cam``:
float32 at stride 4 and ``high_res``: float32 at image size, both max-normalised). Seeds are
scored from both the way eval_seeds does (the uint8 side through ``eval_seeds.run`` itself).

Targets: bytes <= 0.5 x IRN; the seed mIoU the pipeline reports (at the configured background
threshold, and the best over the sweep) within 0.1 point of the float32 result. The largest
difference at any single threshold of the sweep is printed too.

By default the CAMs come from an untrained model on synthetic data (the bytes do not depend on
the weights); ``--project DIR`` takes a finished pipeline's data and ``results/models/esol.pt``
(e.g. the smoke project that ``bench.orchestration --keep DIR`` leaves), whose seeds mean more.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from bench import common

TARGET_BYTES = "<= 0.5"
TARGET_MIOU = "<= 0.1"


def seed_confusions(items, sweep: list[float], k: int) -> np.ndarray:
    """eval_seeds' confusion matrices over the sweep, from (gt, keys, cams in [0, 1]) triples."""
    from esol.evaluation.metrics import confusion

    confs = np.zeros((len(sweep), k, k), dtype=np.int64)
    for gt, keys, cam in items:
        if len(keys):
            best, peak = keys[cam.argmax(axis=0)], cam.max(axis=0)
        else:
            best, peak = np.zeros_like(gt), np.zeros(gt.shape, np.float32)
        for i, t in enumerate(sweep):
            confs[i] += confusion(gt, np.where(peak > t, best, 0), k)
    return confs


def irn_file(path: Path, keys: np.ndarray, cams: torch.Tensor) -> None:
    """IRN's make_cam output: np.save({"keys", "cam" (stride 4), "high_res"}), float32, max-normalised."""
    h, w = cams.shape[1:]
    planes = cams[torch.as_tensor(keys - 1)]
    strided = F.interpolate(planes[None], size=(math.ceil(h / 4), math.ceil(w / 4)), mode="bilinear")[0]
    norm = [(p / (F.adaptive_max_pool2d(p, (1, 1)) + 1e-5)).numpy().astype(np.float32) for p in (strided, planes)]
    np.save(path, {"keys": keys.astype(np.int64), "cam": norm[0], "high_res": norm[1]})


def subset_dataset(dataset, ids: list[str], root: Path):
    """A dataset whose train split is IDS, reading DATASET's images and masks where they are."""
    from esol.data.layout import Dataset

    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    meta = dict(dataset.meta, image_dir=str(dataset.image_dir.resolve()), mask_dir=str(dataset.mask_dir.resolve()))
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "cls_labels.json").write_text((dataset.root / "cls_labels.json").read_text())
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    return Dataset(root)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--images", type=int, help="images (default 48, quick 4; --project: the whole train split)")
    ap.add_argument("--project", type=Path, help="a finished pipeline: its params.yaml, data and esol model")
    args = ap.parse_args(argv)

    from esol.data.layout import Dataset
    from esol.evaluation.metrics import scores
    from esol.inference.cams import multiscale_cams, quantise, save_cam
    from esol.infra.config import params_from_dict
    from esol.infra.runtime import make_runtime
    from esol.steps import eval_seeds
    from esol.training.classifier import load_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.project:
            raw = yaml.safe_load((args.project / "params.yaml").read_text())
            params = params_from_dict(raw)
            dataset = Dataset(args.project / "data" / "dataset")
            model_path, source = (
                args.project / "results" / "models" / "esol.pt",
                f"trained esol model of {args.project}",
            )
            ids = dataset.ids("train")[: args.images]
        else:
            raw = common.params_dict(args.quick)
            params = params_from_dict(raw)
            dataset = common.synthetic_dataset(tmp / "data", raw, args.images or (4 if args.quick else 48))
            model_path, source = tmp / "model.pt", "untrained model"
            common.untrained_model(params, dataset, model_path)
            ids = dataset.ids("train")
        cfg = params.make_cam
        runtime = make_runtime(params.runtime, params.dataset.seed)
        net = load_model(params, dataset, model_path).to(runtime.device).eval()
        net.use_offsets = True
        ours, irn = tmp / "ours", tmp / "irn"
        ours.mkdir()
        irn.mkdir()
        floats = []
        for start in range(0, len(ids), cfg.batch_size):
            batch = ids[start : start + cfg.batch_size]
            cams = multiscale_cams(net, [dataset.image(i) for i in batch], cfg.scales, cfg.flip, runtime.device).cpu()
            for image_id, cam in zip(batch, cams, strict=True):
                keys = np.asarray(dataset.labels(image_id), dtype=np.int64)
                save_cam(ours / f"{image_id}.npz", keys, quantise(cam.numpy(), keys))
                irn_file(irn / f"{image_id}.npy", keys, cam)
                planes = cam.numpy()[keys - 1]
                peak = planes.reshape(len(keys), -1).max(axis=1)[:, None, None]
                floats.append((dataset.mask(image_id), keys, np.clip(planes / np.maximum(peak, 1e-5), 0, 1)))

        ours_bytes = sum(p.stat().st_size for p in ours.iterdir())
        irn_bytes = sum(p.stat().st_size for p in irn.iterdir())

        # Seeds: the uint8 files through eval_seeds itself (on a copy of the dataset's lists holding
        # only IDS as its train split); float32 through the same arithmetic.
        subset = subset_dataset(dataset, ids, tmp / "subset")
        result = eval_seeds.run(
            params, data=subset.root, cams=ours, variant="bench", metrics=tmp / "seeds.json", curve=tmp / "curve.csv"
        )
        sweep = [row["threshold"] for row in result["curve"]]
        float_curve = [scores(c)["miou"] for c in seed_confusions(floats, sweep, dataset.num_classes)]
        ours_curve = [row["miou"] for row in result["curve"]]
    at = sweep.index(params.eval_seeds.threshold)
    delta_at = abs(ours_curve[at] - float_curve[at])
    delta_best = abs(max(ours_curve) - max(float_curve))
    delta_max = max(abs(a - b) for a, b in zip(ours_curve, float_curve, strict=True))
    figures = [
        common.Figure(
            "storage.bytes_over_irn_float32",
            ours_bytes / irn_bytes,
            TARGET_BYTES,
            detail=f"{ours_bytes / len(ids) / 1024:.3g} KiB/image vs {irn_bytes / len(ids) / 1024:.3g} KiB/image",
        ),
        common.Figure(
            "storage.seed_miou_delta_points",
            max(delta_at, delta_best),
            TARGET_MIOU,
            detail=f"the seed mIoU the pipeline reports, uint8 vs float32: {ours_curve[at]:.3f} vs "
            f"{float_curve[at]:.3f} at threshold {params.eval_seeds.threshold}, best {max(ours_curve):.3f} vs "
            f"{max(float_curve):.3f}; largest delta at any one threshold of the sweep {delta_max:.3g}",
        ),
    ]
    extra = {
        "inputs": f"{len(ids)} images of {params.synthetic.image_size}px ({dataset.name}), {source}, "
        f"scales {list(cfg.scales)}, flip {cfg.flip}",
        "curve uint8": ours_curve,
        "curve float32": float_curve,
    }
    common.report("Storage: stored CAMs vs IRN float32 files; seed mIoU", args, figures, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
