"""The variants of the ablation, and what each is made from.

Every variant is a classifier model (``results/models/<name>.pt``) trained through some of the
three stages (esol/method/stages.py), each stage starting from another variant's model:

| variant   | stages                                        | trained from | CAMs cover | pseudo labels scored |
| cam       | train_cam                                     | (scratch)    | train      | yes (the baseline)   |
| expansion | train_cam, train_expansion                    | cam          | train      | no                   |
| shrinkage | train_cam, train_shrinkage                    | cam          | train      | no                   |
| esol      | train_cam, train_expansion, train_shrinkage   | expansion    | train_aug  | yes (the method)     |

The final variant's CAMs cover train_aug, as its pseudo labels train the segmentation network;
the others only need the ground-truth split (train) their seeds are scored on. The workflow's
rules, the summary, the figures and the report read this module rather than lists of their own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One variant: its classifier stages, the model its last stage starts from, its CAM split."""

    name: str
    stages: tuple[str, ...]  # the classifier stages it went through, in order
    trained_from: str | None  # the variant whose model its last stage starts from (None: from scratch)
    cam_split: str  # the split its CAMs cover: "train_aug" or "train"
    pseudo_labels_scored: bool  # its CRF pseudo labels are made and scored
    title: str  # its last stage, as the training-curves figure names it

    @property
    def stage(self) -> str:
        """The stage that makes this variant's model."""
        return self.stages[-1]

    @property
    def training_run(self) -> str:
        """Its training run's name (``results/live/<run>``, ``logs/<run>.log``): the stage, and for
        the shrinkage stage, which two variants share, the variant too."""
        return f"{self.stage}_{self.name}" if self.stage == "train_shrinkage" else self.stage


FINAL_VARIANT = "esol"

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("cam", ("train_cam",), None, "train", True, "stage 0: CAM"),
        Variant("expansion", ("train_cam", "train_expansion"), "cam", "train", False, "stage 1: expansion"),
        Variant("shrinkage", ("train_cam", "train_shrinkage"), "cam", "train", False, "stage 2: shrinkage (from CAM)"),
        Variant(
            FINAL_VARIANT,
            ("train_cam", "train_expansion", "train_shrinkage"),
            "expansion",
            "train_aug",
            True,
            "stage 2: shrinkage (ESOL)",
        ),
    )
}

NAMES: tuple[str, ...] = tuple(VARIANTS)
PSEUDO_LABEL_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS.values() if v.pseudo_labels_scored)
# The variants made by the shrinkage stage (the `{shrunk}` wildcard of its rule).
SHRUNK: tuple[str, ...] = tuple(v.name for v in VARIANTS.values() if v.stage == "train_shrinkage")
# One training run per stage and shrunk variant, in pipeline order (the variants share stages 0 and 1).
TRAINING_RUNS: tuple[str, ...] = tuple(dict.fromkeys(v.training_run for v in VARIANTS.values()))
TRAINING_TITLES: dict[str, str] = {v.training_run: v.title for v in VARIANTS.values()}


def cam_split(name: str, seg_variants: tuple[str, ...] | list[str] = (), pseudo_label_split: str = "train") -> str:
    """The split variant ``name``'s CAMs cover: train_aug when a segmentation net trains on its
    pseudo labels (``train_seg.variants``) or its pseudo labels are scored there
    (``dataset.pseudo_label_split``), else the variant's own (:attr:`Variant.cam_split`)."""
    if name in seg_variants or (pseudo_label_split == "train_aug" and VARIANTS[name].pseudo_labels_scored):
        return "train_aug"
    return VARIANTS[name].cam_split
