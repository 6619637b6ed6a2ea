import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from esol.config import ConfigError, effective

# An unknown key, a wrong type or an out-of-range value stops the run here, key named.
validate(config, "../schemas/params.schema.yaml")
try:
    EFFECTIVE = effective(config)  # the sections with the dataset's recipe applied
except ConfigError as error:
    raise WorkflowError(str(error))

ESOL = f"{sys.executable} -m esol"
DATA = "data/dataset"
VARIANTS = ["cam", "expansion", "shrinkage", "esol"]
FINAL_VARIANT = "esol"
# Variants whose CRF pseudo labels are scored (the baseline and the method).
PSEUDO_LABEL_VARIANTS = ["cam", FINAL_VARIANT]
FINAL_METRICS = [
    "results/metrics/seeds.json",
    "results/metrics/pseudo_labels.json",
    "results/metrics/segmentation.json",
    "results/metrics/ablation.csv",
    "results/figures/samplers",
    "results/figures/metrics.html",
    "results/figures/samples",
]

# Sections of params.yaml each step reads; passed as `params:` so a change reruns the step.
SECTIONS_CLASSIFIER = ["dataset", "synthetic", "runtime", "model"]


def params_file():
    """params.yaml, or a dump of the merged config when --config/--configfile overrode it."""
    with open("params.yaml") as handle:
        on_disk = yaml.safe_load(handle)
    if on_disk == config:
        return "params.yaml"
    path = Path(".snakemake/esol/params.override.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return str(path)


PARAMS = params_file()


def sections(*names):
    return {name: EFFECTIVE[name] for name in names}


def metrics_file(path):
    """A metrics file, offered for download in the report's "1. Metrics" (see report.smk)."""
    return report(path, caption="../report/metrics_file.rst", category="1. Metrics", subcategory="Files")


def cam_split(variant):
    """The final variant's CAMs cover train_aug (they train the segmentation net); the
    ablation variants only need the ground-truth split the seeds are scored on."""
    return "train_aug" if variant == FINAL_VARIANT else "train"


def shrinkage_init(wildcards):
    """esol shrinks the expanded classifier; the shrinkage-only ablation shrinks plain CAM."""
    return "results/models/expansion.pt" if wildcards.shrunk == FINAL_VARIANT else "results/models/cam.pt"


wildcard_constraints:
    variant="|".join(VARIANTS),
    shrunk="shrinkage|esol",
