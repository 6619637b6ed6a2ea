from esol.dvcgen import render

from .conftest import REPO


def test_dvc_yaml_matches_the_snakefile():
    """dvc.yaml is generated from the Snakefile: regenerate it and compare."""
    assert (REPO / "dvc.yaml").read_text() == render(REPO), "dvc.yaml is stale: run `make dvc.yaml`"
