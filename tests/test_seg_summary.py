"""summarize: the ablation carries each variant's segmentation net; segmentation.json is esol's."""

import json

import pandas as pd
import pytest

from esol.infra.io import InputError
from esol.steps import summarize

from .test_study import seeds_file


def seg_file(tmp_path, variant, miou):
    path = tmp_path / "segmentation" / f"{variant}.json"
    path.parent.mkdir(exist_ok=True)
    data = {"variant": variant, "miou": miou, "precision": 70.0, "recall": 60.0, "per_class": {}}
    data |= {"miou_single_scale": miou - 1, "miou_crf": miou + 1}
    path.write_text(json.dumps(data))
    return path


def test_ablation_has_segmentation_scores_per_variant_and_the_final_file_is_esols(smoke_params, tmp_path):
    points = [(0.1, 40.0, 70.0, 35.0), (0.3, 60.0, 50.0, 40.0)]
    seeds = [seeds_file(tmp_path, v, (0.3, 60.0, 50.0, 40.0), points) for v in ("cam", "esol")]
    pseudo = tmp_path / "pl_esol.json"
    pseudo.write_text(json.dumps({"variant": "esol", "miou": 50.0}))
    segs = [seg_file(tmp_path, "cam", 61.0), seg_file(tmp_path, "esol", 64.0)]
    out = {name: tmp_path / f"{name}.out" for name in summarize.OUTPUTS}
    summarize.run(smoke_params, seeds=seeds, pseudo_labels=[pseudo], segmentation=segs, **out)
    table = pd.read_csv(out["ablation"]).set_index("variant")
    assert table.loc["cam", "seg_miou"] == 61.0 and table.loc["esol", "seg_miou"] == 64.0
    assert table.loc["esol", "seg_miou_crf"] == 65.0 and table.loc["cam", "seg_miou_single_scale"] == 60.0
    assert table.loc["esol", "seg_precision"] == 70.0 and table.loc["esol", "seg_recall"] == 60.0
    assert json.loads(out["final_segmentation"].read_text())["miou"] == 64.0
    with pytest.raises(InputError, match="final variant esol"):
        summarize.run(smoke_params, seeds=seeds, pseudo_labels=[pseudo], segmentation=segs[:1], **out)


def test_the_variants_must_include_the_final_one():
    from esol.infra.config import ConfigError, params_from_dict

    from .conftest import smoke_params_dict

    raw = smoke_params_dict()
    raw["train_seg"]["variants"] = ["cam"]
    with pytest.raises(ConfigError, match=r"train_seg\.variants"):
        params_from_dict(raw)
