import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from esol import variants
from esol.infra.config import ConfigError, effective

# An unknown key, a wrong type or an out-of-range value stops the run here, key named.
validate(config, "../schemas/params.schema.yaml")
try:
    EFFECTIVE = effective(config)  # the sections with the dataset's recipe applied
except ConfigError as error:
    raise WorkflowError(str(error))

ESOL = f"{sys.executable} -m esol"
DATA = "data/dataset"
# Which variants exist and what each is made from: esol/variants.py.
VARIANTS = list(variants.NAMES)
FINAL_VARIANT = variants.FINAL_VARIANT
PSEUDO_LABEL_VARIANTS = list(variants.PSEUDO_LABEL_VARIANTS)
# Variants a segmentation net is trained and scored on (params: train_seg.variants).
SEG_VARIANTS = list(EFFECTIVE["train_seg"]["variants"])
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


# Steps that run several processes (the CRF's pool, COCO's mask painting) ask for every core:
# Snakemake caps a job's threads at --cores (the Slurm profile sets them per rule). make_cam asks
# for its loader workers (runtime.num_workers) and two more, so that jobs on several GPUs still run
# side by side; it fits its workers into the threads it gets. In dvc.yaml, whose stages run one at
# a time, every `--threads N` is `--threads 0`: the machine's usable CPUs (esol/dvcgen.py).
ALL_CORES = 1024
CAM_THREADS = 2 + EFFECTIVE["runtime"]["num_workers"]

# Per-image steps split into separate jobs (make_cam.shards, refine_crf.shards): shard k of n
# writes results/shards/<step output>/<k>, one gather job puts them together byte-identically.
CAM_SHARDS = EFFECTIVE["make_cam"]["shards"]
CRF_SHARDS = EFFECTIVE["refine_crf"]["shards"]


def sharded(path, shards):
    """A per-image step's output folder: ``path`` itself, or its shard folders when split."""
    return path if shards == 1 else str(Path("results", "shards", path.removeprefix("results/"), "{shard}"))


def shard_suffix(shards):
    """What a shard job adds to its log and benchmark file names."""
    return "" if shards == 1 else "_{shard}"


def shard_options(shards):
    """The step's --shard/--shards options (none when not split)."""
    if shards == 1:
        return ""
    return lambda wildcards: f"--shard {wildcards.shard} --shards {shards}"


def sections(*names):
    return {name: EFFECTIVE[name] for name in names}


def metrics_file(path):
    """A metrics file, offered for download in the report's "1. Metrics" (see report.smk)."""
    return report(path, caption="../report/metrics_file.rst", category="1. Metrics", subcategory="Files")


# The split pseudo masks are scored on (dataset.pseudo_label_split): train, or train_aug.
PSEUDO_LABEL_SPLIT = EFFECTIVE["dataset"]["pseudo_label_split"]


def cam_split(variant):
    """The split a variant's CAMs cover (esol/variants.py); a variant with a segmentation net
    needs train_aug (its pseudo labels train the net), and so does a scored variant when pseudo
    masks are scored on train_aug."""
    return variants.cam_split(variant, SEG_VARIANTS, PSEUDO_LABEL_SPLIT)


def folder_inputs(wildcards):
    """A folder dataset's files (esol.data.folder), so that editing them reruns prepare_data."""
    if EFFECTIVE["dataset"]["name"] != "folder":
        return []
    root = Path(EFFECTIVE["folder"]["root"])
    names = ["labels.csv", "classes.txt", "images", "masks", "splits/train.txt", "splits/val.txt"]
    return [str(root / name) for name in names if (root / name).exists()]


def shrinkage_init(wildcards):
    """The model a shrunk variant starts from: esol the expanded one, shrinkage plain CAM."""
    return f"results/models/{variants.VARIANTS[wildcards.shrunk].trained_from}.pt"


wildcard_constraints:
    variant="|".join(VARIANTS),
    shard=r"\d+",
    shrunk="|".join(variants.SHRUNK),


# --- IRN refinement (workflow/rules/irn.smk) ---------------------------------------------------
# The variants whose IRN masks are made and scored: those whose CRF pseudo labels are.
IRN_VARIANTS = PSEUDO_LABEL_VARIANTS
IRN_PSEUDO_LABEL_METRICS = [f"results/metrics/pseudo_labels/{variant}_irn.json" for variant in IRN_VARIANTS]
FINAL_METRICS.append("results/figures/refinement")


def seg_labels(wildcards):
    """The pseudo masks a variant's segmentation net trains on (train_seg.refinement): the CRF
    step's IR labels (uncertain pixels ignored) or IRN's random-walk masks."""
    suffix = "_irn" if EFFECTIVE["train_seg"]["refinement"] == "irn" else ""
    return f"results/pseudo_labels/{wildcards.variant}{suffix}"


def irn_mask_split(variant):
    """IRN masks cover train_aug only where they train a segmentation net (train_seg.refinement:
    irn) or are scored there (dataset.pseudo_label_split); otherwise the split they are scored on,
    which saves the walk of 900 synthetic images (about 85 s of CPU) per variant in the default run."""
    if variant in SEG_VARIANTS and EFFECTIVE["train_seg"]["refinement"] == "irn":
        return "train_aug"
    return PSEUDO_LABEL_SPLIT
