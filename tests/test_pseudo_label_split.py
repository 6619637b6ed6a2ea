"""dataset.pseudo_label_split: pseudo masks scored on train (the default, as IRN) or on train_aug."""

from __future__ import annotations

import shlex
import shutil

import numpy as np
import pytest
import yaml

from esol.infra.config import ConfigError, deep_merge, params_from_dict
from esol.infra.io import read_json, write_label_png

from .conftest import REPO, smoke_params_dict


def split_flag(cmd: str) -> str:
    words = shlex.split(cmd)
    return words[words.index("--split") + 1]


def test_train_aug_scoring_puts_the_scored_variants_masks_on_train_aug(tmp_path):
    """With pseudo_label_split: train_aug the scored variants' CAMs, CRF labels and IRN masks
    cover train_aug; the default keeps IRN masks on train (the split they are scored on)."""
    from esol.dvcgen import render

    for name in ("Snakefile", "workflow", "config"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, tmp_path / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    default = yaml.safe_load(render(tmp_path))["stages"]
    params["dataset"]["pseudo_label_split"] = "train_aug"
    params["train_seg"]["variants"] = ["esol"]  # cam then needs train_aug only to be scored there
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    on_train_aug = yaml.safe_load(render(tmp_path))["stages"]
    for variant in ("cam", "esol"):
        assert split_flag(default[f"make_sem_seg-{variant}"]["cmd"]) == "train"
        for stage in ("make_cam", "refine_crf", "make_sem_seg"):
            assert split_flag(on_train_aug[f"{stage}-{variant}"]["cmd"]) == "train_aug", (stage, variant)
    for variant in ("expansion", "shrinkage"):  # seeds only: scored on train
        assert split_flag(on_train_aug[f"make_cam-{variant}"]["cmd"]) == "train"


def test_pseudo_labels_are_scored_on_the_configured_split(smoke_dataset, tmp_path):
    """Perfect labels on every train_aug image: the train_aug score covers them all (more images
    than train), and a wrong label on an image outside train lowers only the train_aug score."""
    from esol.steps import eval_pseudo_labels

    train, train_aug = smoke_dataset.ids("train"), smoke_dataset.ids("train_aug")
    outside = [i for i in train_aug if i not in set(train) and smoke_dataset.mask(i).max() > 0]
    assert outside, "the smoke dataset's train_aug must hold images with objects outside train"
    labels = tmp_path / "labels"
    labels.mkdir()
    for image_id in train_aug:
        mask = smoke_dataset.mask(image_id).copy()
        if image_id == outside[0]:
            mask[:] = 0  # all background: a wrong label seen only on train_aug
        write_label_png(labels / f"{image_id}.png", mask.astype(np.uint8))
    results = {}
    for split in ("train", "train_aug"):
        params = params_from_dict(deep_merge(smoke_params_dict(), {"dataset": {"pseudo_label_split": split}}))
        out = tmp_path / f"{split}.json"
        eval_pseudo_labels.run(params, data=smoke_dataset.root, labels=labels, variant="cam", metrics=out)
        results[split] = read_json(out)
    assert results["train"]["split"] == "train" and results["train"]["scored_images"] == len(train)
    assert results["train_aug"]["scored_images"] == len(train_aug) > len(train)
    assert results["train"]["miou"] == pytest.approx(100.0)
    assert results["train_aug"]["miou"] < 100.0


def test_voc_train_aug_scoring_without_sbd_is_refused_by_name():
    raw = deep_merge(smoke_params_dict(), {"dataset": {"name": "voc12", "pseudo_label_split": "train_aug"}})
    with pytest.raises(ConfigError, match=r"dataset\.pseudo_label_split.*dataset\.sbd: true"):
        params_from_dict(raw)
    raw["dataset"]["sbd"] = True
    assert params_from_dict(raw).dataset.pseudo_label_split == "train_aug"
