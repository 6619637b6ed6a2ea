# ESOL, end to end (the paper's pipeline figure, read left to right):
#
#   image labels -> classifier: CAM (stage 0) -> expansion (stage 1) -> shrinkage (stage 2)
#   -> seed areas (CAM inference, seed evaluation) -> refinement (CRF, or IRN on the CRF's labels) -> pseudo masks
#   -> segmentation network -> evaluation
#
# `snakemake --cores 2` runs it on CPU; `snakemake --cores 8 --resources gpu=4` on a GPU box.
# Rules with `resources: gpu=N` run `esol --gpus N`: each such job leases devices of its own
# (esol/infra/devices.py), since Snakemake caps GPU jobs but never says which GPU a job should use.
# dvc.yaml is generated from this workflow (`make dvc.yaml`); edit the rules, not dvc.yaml.

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/seeds.smk"
include: "workflow/rules/irn.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        FINAL_METRICS,
