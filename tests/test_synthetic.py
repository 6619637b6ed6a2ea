"""The synthetic dataset is deterministic and carries both failure modes ESOL targets."""

import numpy as np

from esol.data.synthetic import generate_sample, make_textures
from esol.infra.io import IGNORE_LABEL


def test_same_seed_same_images_other_seed_other_images(smoke_params):
    cfg = smoke_params.synthetic
    a = generate_sample(cfg, 0, 3)
    b = generate_sample(cfg, 0, 3)
    c = generate_sample(cfg, 1, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_layout_on_disk(smoke_dataset):
    sizes = smoke_dataset.check()
    assert sizes == {"train_aug": 96, "train": 24, "val": 24}
    assert set(smoke_dataset.ids("train")) <= set(smoke_dataset.ids("train_aug"))
    assert not set(smoke_dataset.ids("val")) & set(smoke_dataset.ids("train_aug"))
    mask = smoke_dataset.mask(smoke_dataset.ids("val")[0])
    assert IGNORE_LABEL in mask  # object borders are ignored, as in VOC
    for image_id in smoke_dataset.ids("train"):
        present = {int(c) for c in np.unique(smoke_dataset.mask(image_id))} - {0, IGNORE_LABEL}
        assert set(smoke_dataset.labels(image_id)) <= present


def test_context_texture_follows_its_class(smoke_params):
    """With context_prob p, the background of an image with class c is c's texture about p of
    the time (context leakage), and the class-specific part covers only part of the object."""
    from dataclasses import replace

    cfg = replace(smoke_params.synthetic, image_size=64, num_classes=4, max_objects=1, context_prob=0.75)
    _, contexts, _, _ = make_textures(cfg.num_classes)
    hits = 0
    n = 80
    for i in range(n):
        image, _mask, labels = generate_sample(cfg, 0, i)
        corner = image[:6, :6].astype(np.float32) / 255
        # nearest context colour (mean) among the class contexts
        means = [np.mean([c.color_a, c.color_b], axis=0) for c in contexts]
        nearest = int(np.argmin([np.abs(corner.mean((0, 1)) - m).sum() for m in means]))
        hits += nearest + 1 == labels[0]
    assert 0.6 < hits / n <= 0.95
