import numpy as np

from esol.crf import crf_label_inference, pseudo_label
from esol.io import IGNORE_LABEL


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
    label = pseudo_label(image, keys, cams, smoke_params.refine_crf)
    values = set(np.unique(label).tolist())
    assert values <= {0, IGNORE_LABEL, *keys.tolist()}
    assert set(keys.tolist()) <= values
    # every CAM is at least 0.2, above both background scores: no pixel is confident background
    assert 0 not in values and IGNORE_LABEL in values


def test_image_without_foreground_classes_is_all_background(smoke_dataset, smoke_params):
    image, _ = blurry_seed_case(smoke_dataset)
    label = pseudo_label(
        image, np.array([], dtype=np.int64), np.zeros((0, *image.shape[:2]), np.float32), smoke_params.refine_crf
    )
    assert (label == 0).all()
