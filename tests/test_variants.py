"""esol/variants.py is the one list of variants: the workflow (dvc.yaml, generated from the
Snakefile) builds each variant as the module says."""

from __future__ import annotations

import shlex

import yaml

from esol import variants

from .conftest import REPO


def stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def flag(cmd: str, name: str) -> str | None:
    words = shlex.split(cmd)
    return words[words.index(name) + 1] if name in words else None


def test_each_variant_is_trained_from_the_model_the_module_names_with_its_last_stage():
    all_stages = stages()
    for variant in variants.VARIANTS.values():
        (stage,) = [s for s in all_stages.values() if f"results/models/{variant.name}.pt" in s.get("outs", [])]
        words = shlex.split(stage["cmd"])
        assert variant.stage in words, variant.name
        init = flag(stage["cmd"], "--init-model")
        assert init == (f"results/models/{variant.trained_from}.pt" if variant.trained_from else None), variant.name
        assert flag(stage["cmd"], "--live-dir") == f"results/live/{variant.training_run}"
        if variant.trained_from:  # the stages before the last are those of the model it starts from
            assert variant.stages[:-1] == variants.VARIANTS[variant.trained_from].stages, variant.name


def seg_variants() -> tuple[str, ...]:
    from esol.infra.config import load_params

    return load_params(REPO / "params.yaml").train_seg.variants


def test_cam_splits_and_scored_pseudo_labels_follow_the_module():
    all_stages = stages()
    for variant in variants.VARIANTS.values():
        split = flag(all_stages[f"make_cam-{variant.name}"]["cmd"], "--split")
        assert split == variants.cam_split(variant.name, seg_variants())
        assert f"eval_seeds-{variant.name}" in all_stages
        assert (f"eval_pseudo_labels-{variant.name}" in all_stages) == variant.pseudo_labels_scored
    assert variants.VARIANTS[variants.FINAL_VARIANT].cam_split == "train_aug"  # it trains the segmentation net
    for name in seg_variants():  # a segmentation net per variant, on its own pseudo labels
        assert flag(all_stages[f"train_seg-{name}"]["cmd"], "--labels") == f"results/pseudo_labels/{name}"
    assert variants.cam_split("cam", ("cam", "esol")) == "train_aug" and variants.cam_split("cam") == "train"


def test_summary_and_figures_read_the_variants_in_the_modules_order():
    from esol.steps import make_figures

    assert make_figures.VARIANT_ORDER == variants.NAMES == ("cam", "expansion", "shrinkage", "esol")
    assert make_figures.TRAINING_ORDER[: len(variants.TRAINING_RUNS)] == variants.TRAINING_RUNS
    live = shlex.split(stages()["make_figures"]["cmd"])
    expected = [*variants.TRAINING_RUNS, *(f"train_seg_{name}" for name in seg_variants())]
    runs = live[live.index("--live") + 1 : live.index("--live") + 1 + len(expected)]
    assert runs == [f"results/live/{run}" for run in expected]
    assert set(expected) <= set(make_figures.TRAINING_ORDER)
