from esol.dvcgen import render

from .conftest import REPO


def test_dvc_yaml_matches_the_snakefile():
    """dvc.yaml is generated from the Snakefile: regenerate it and compare."""
    assert (REPO / "dvc.yaml").read_text() == render(REPO), "dvc.yaml is stale: run `make dvc.yaml`"


def test_every_segmentation_variant_has_its_train_and_eval_stages():
    """train_seg.variants (cam and esol) each get a segmentation net and its scores; the final
    variant's net is also results/models/seg.pt; the cam CAMs cover train_aug to train one."""
    import yaml

    from esol.infra.config import load_params

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    variants = load_params(REPO / "params.yaml").train_seg.variants
    assert set(variants) == {"cam", "esol"}
    for variant in variants:
        assert f"results/models/seg_{variant}.pt" in stages[f"train_seg-{variant}"]["outs"]
        assert f"results/pseudo_labels/{variant}" in stages[f"train_seg-{variant}"]["deps"]
        eval_metrics = stages[f"eval_seg-{variant}"]["metrics"]
        assert eval_metrics == [f"results/metrics/segmentation/{variant}.json"]
        assert f"results/metrics/segmentation/{variant}.json" in stages["summarize"]["deps"]
        assert "--split train_aug" in stages[f"make_cam-{variant}"]["cmd"]
    assert stages["final_seg_model"]["deps"] == ["results/models/seg_esol.pt"]
    assert "results/models/seg.pt" in stages["final_seg_model"]["outs"]
    assert "results/metrics/segmentation.json" in stages["summarize"]["metrics"]
