"""The segmentation step learns: trained on clean labels it beats an all-background predictor."""

import pytest

from esol.infra.config import params_from_dict
from esol.steps import eval_seg, train_seg

from .conftest import smoke_params_dict


@pytest.mark.slow
def test_segmentation_net_beats_all_background_on_val(smoke_dataset, tmp_path):
    raw = smoke_params_dict()
    raw["train_seg"]["epochs"] = 12  # from scratch, ~70 steps: enough on clean labels
    params = params_from_dict(raw)
    model = tmp_path / "seg.pt"
    train_seg.run(
        params,
        data=smoke_dataset.root,
        labels=smoke_dataset.mask_dir,
        out_model=model,
        metrics=tmp_path / "train.json",
        live_dir=tmp_path / "live",
        checkpoint_dir=tmp_path / "ck",
    )
    result = eval_seg.run(
        params, data=smoke_dataset.root, model=model, metrics=tmp_path / "seg.json", predictions=tmp_path / "pred"
    )
    assert result["miou"] > result["all_background_miou"] + 5
    assert result["per_class"]["background"] > 50
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(smoke_dataset.ids("val"))
    # scale 1.0 + flip (the default): the plain single-scale scores and the CRF's come beside
    for key in ("single_scale", "crf"):
        assert result[f"miou_{key}"] == result[key]["miou"] > result["all_background_miou"]
        assert {"precision", "recall", "per_class"} <= set(result[key])
    assert result["variant"] == "esol" and result["scales"] == [1.0] and result["flip"] is True
