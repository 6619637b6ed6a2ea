"""train_seg resumes a checkpoint only for the pseudo labels it was trained on."""

import numpy as np

from esol.infra.io import write_label_png
from esol.steps.train_seg import labels_digest


def test_labels_digest_follows_the_label_contents_not_only_the_names(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    write_label_png(tmp_path / "a.png", label)
    write_label_png(tmp_path / "b.png", label)
    before = labels_digest(tmp_path)
    assert labels_digest(tmp_path) == before
    label[2:5, 2:5] = 1  # an upstream change: same file names, other labels
    write_label_png(tmp_path / "b.png", label)
    assert labels_digest(tmp_path) != before
