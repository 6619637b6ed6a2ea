import dataclasses

import numpy as np

from esol.infra.io import IGNORE_LABEL
from esol.refine.crf import crf_label_inference, pseudo_label


def blurry_seed_case(smoke_dataset):
    """A real synthetic image, and a coarse seed: the ground-truth mask shifted and blocky."""
    image_id = smoke_dataset.ids("train")[0]
    image = smoke_dataset.image(image_id)
    gt = smoke_dataset.mask(image_id)
    return image, gt


def test_crf_changes_a_coarse_label_map_towards_image_edges(smoke_dataset, smoke_params):
    image, gt = blurry_seed_case(smoke_dataset)
    fg = np.where(gt == IGNORE_LABEL, 0, gt) > 0
    # blocky, dilated seed: 8x8 blocks, any foreground pixel marks the whole block
    h, w = fg.shape
    blocks = fg.reshape(h // 8, 8, w // 8, 8).any(axis=(1, 3))
    seed = np.kron(blocks, np.ones((8, 8), dtype=bool)).astype(np.int64)
    refined = crf_label_inference(image, seed, 2, smoke_params.refine_crf)
    assert refined.shape == seed.shape
    assert (refined != seed).sum() > 0.01 * seed.size
    valid = gt != IGNORE_LABEL
    agreement = lambda labels: ((labels > 0) == fg)[valid].mean()  # noqa: E731
    assert agreement(refined) > agreement(seed)


def test_pseudo_label_marks_uncertain_pixels_and_keeps_classes(smoke_dataset, smoke_params):
    image, gt = blurry_seed_case(smoke_dataset)
    keys = np.array(sorted({int(c) for c in np.unique(gt) if c not in (0, IGNORE_LABEL)}))
    cams = np.stack([((gt == k).astype(np.float32) * 0.6 + 0.2) for k in keys])
    cfg = dataclasses.replace(smoke_params.refine_crf, fg_threshold=0.3, bg_threshold=0.1)
    label = pseudo_label(image, keys, cams, cfg)
    values = set(np.unique(label).tolist())
    assert values <= {0, IGNORE_LABEL, *keys.tolist()}
    assert set(keys.tolist()) <= values
    # every CAM is at least 0.2, above the background score 0.1: no pixel is confident background;
    # off the objects (0.2) it is below the foreground map's 0.3: uncertain
    assert 0 not in values and IGNORE_LABEL in values


def test_image_without_foreground_classes_is_all_background(smoke_dataset, smoke_params):
    image, _ = blurry_seed_case(smoke_dataset)
    label = pseudo_label(
        image, np.array([], dtype=np.int64), np.zeros((0, *image.shape[:2]), np.float32), smoke_params.refine_crf
    )
    assert (label == 0).all()


def test_refine_step_takes_a_variants_own_thresholds(smoke_dataset, tmp_path):
    """``refine_crf.variant_thresholds`` gives one variant its own fg/bg thresholds; the others
    keep the section's. Weak CAMs (0.05 of the maximum on every object) are foreground under
    esol's thresholds (0.03 / 0.01) and background under the section's (0.06 / 0.02)."""
    from PIL import Image

    from esol.inference.cams import save_cam
    from esol.infra.config import params_from_dict
    from esol.steps import refine_crf

    from .conftest import smoke_params_dict

    raw = smoke_params_dict()
    raw["refine_crf"].update(fg_threshold=0.06, bg_threshold=0.02, variant_thresholds={"esol": [0.03, 0.01]})
    params = params_from_dict(raw)
    cams = tmp_path / "cams"
    cams.mkdir()
    ids = smoke_dataset.ids("train")
    for image_id in ids:
        keys = np.array(smoke_dataset.labels(image_id), dtype=np.int64)
        mask = smoke_dataset.mask(image_id)
        weak = [(mask == k).astype(np.uint8) * 13 for k in keys]  # 13 / 255 = 0.051
        save_cam(cams / f"{image_id}.npz", keys, np.stack(weak) if weak else np.zeros((0, *mask.shape), np.uint8))
    foreground = {}
    for variant in ("cam", "esol"):
        out = tmp_path / variant
        refine_crf.run(params, data=smoke_dataset.root, cams=cams, split="train", out_dir=out, variant=variant)
        labels = [np.array(Image.open(out / f"{i}.png")) for i in ids]
        foreground[variant] = sum(int(((label > 0) & (label < 255)).sum()) for label in labels)
    assert foreground["cam"] == 0
    assert foreground["esol"] > 0
    assert params.refine_crf.for_variant("shrinkage") is params.refine_crf
