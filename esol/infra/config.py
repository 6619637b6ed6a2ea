"""Typed view of ``params.yaml``.

The JSON schema in ``workflow/schemas/params.schema.yaml`` is the authority on what is allowed;
it is enforced here (for the CLI and DVC) and by the Snakefile (for Snakemake). The dataclasses
below give each step a typed section, so code reads ``cfg.lr`` instead of ``cfg["lr"]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


class ConfigError(ValueError):
    """params.yaml is missing, malformed, or breaks the schema."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    seed: int
    sbd: bool  # voc12: SBD required (downloaded when missing); false: used only when found on disk
    pseudo_label_split: str  # the split pseudo masks are scored on: train or train_aug


@dataclass(frozen=True)
class SyntheticConfig:
    image_size: int
    num_classes: int
    num_train_aug: int
    num_train: int
    num_val: int
    max_objects: int
    part_fraction: float
    context_prob: float


@dataclass(frozen=True)
class FolderConfig:
    root: str  # holds images/, labels.csv, classes.txt, optional masks/ and splits/ (esol.data.folder)
    val_fraction: float  # share of the images drawn (seeded) into val when there is no splits/
    unscored_train_sample: int  # without masks in train: train images the ablation CAMs and the report show


@dataclass(frozen=True)
class RuntimeConfig:
    device: str
    num_workers: int
    amp: str
    channels_last: str
    deterministic: bool | str  # true | false | "auto" (CPU deterministic, CUDA fast)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str
    pretrained: bool
    weights_file: str
    width: int
    output_stride: int
    max_offset: float
    clip_mode: str
    clip_quantile: float
    clip_from: str


@dataclass(frozen=True)
class TrainCamConfig:
    epochs: int
    batch_size: int
    crop_size: int
    resize_long: tuple[int, int] | None  # random long side in [min, max] before the crop (None: kept)
    lr: float  # backbone
    lr_w1: float  # W1, the expansion kernel (new, no counterpart in IRN)
    lr_new: float  # the 1x1 classifier
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class TrainExpansionConfig:
    epochs: int
    batch_size: int
    crop_size: int
    resize_long: tuple[int, int] | None
    lr: float
    lr_offset: float
    grl_scale: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class TrainShrinkageConfig:
    epochs: int
    batch_size: int
    crop_size: int
    resize_long: tuple[int, int] | None
    lr: float
    lr_offset: float
    area_weight: float
    area_form: str
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class MakeCamConfig:
    scales: tuple[float, ...]
    flip: bool
    batch_size: int
    shards: int  # separate jobs (Snakemake/DVC) the images are split over; gathered byte-identical


@dataclass(frozen=True)
class EvalSeedsConfig:
    threshold: float
    sweep_start: float
    sweep_stop: float
    sweep_step: float


@dataclass(frozen=True)
class RefineCrfConfig:
    fg_threshold: float
    bg_threshold: float
    gt_prob: float
    iterations: int
    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float
    variant_thresholds: dict[str, list[float]]
    shards: int  # separate jobs the images are split over; gathered byte-identical

    def for_variant(self, variant: str) -> RefineCrfConfig:
        """These settings with ``variant``'s own thresholds, when it has any."""
        if variant not in self.variant_thresholds:
            return self
        fg, bg = self.variant_thresholds[variant]
        return dataclasses.replace(self, fg_threshold=fg, bg_threshold=bg)


@dataclass(frozen=True)
class TrainIrnConfig:
    epochs: int
    batch_size: int
    crop_size: int
    lr: float  # boundary branch (and a trained backbone); the displacement branch at 10x
    momentum: float
    weight_decay: float
    radius: int  # affinity pairs within this many stride-4 cells
    scale_range: tuple[float, ...]  # random rescaling of each training image, [low, high]
    train_backbone: bool  # False: IRN's frozen ImageNet backbone


@dataclass(frozen=True)
class MakeSemSegConfig:
    radius: int  # random-walk pairs within this many stride-4 cells
    beta: float  # affinity exponent
    exp_times: int  # squarings of the transition matrix: a walk of 2 ** exp_times steps
    bg_threshold: float  # background score against the max-normalised walked CAMs


@dataclass(frozen=True)
class TrainSegConfig:
    arch: str
    variants: tuple[str, ...]  # pseudo-label variants a segmentation net is trained on, the final one last
    refinement: str  # crf | irn: which pseudo masks the segmentation net trains on
    epochs: int
    batch_size: int
    crop_size: int
    scale_min: float  # random rescale range before flip and crop ([1.0, 1.0]: no rescale)
    scale_max: float
    lr: float
    lr_head_factor: float  # the new layers (model.classifier) train at lr * lr_head_factor
    momentum: float
    weight_decay: float
    weights_file: str  # segmentation backbone's pre-staged weights ("": see segmentation.backbone_weights_file)


@dataclass(frozen=True)
class EvalSegConfig:
    batch_size: int
    scales: tuple[float, ...]  # multi-scale inference
    flip: bool
    crf: bool  # also score dense-CRF post-processed predictions (deeplab-pytorch's test-time CRF)
    crf_iterations: int
    crf_pos_w: float
    crf_pos_xy_std: float
    crf_bi_w: float
    crf_bi_xy_std: float
    crf_bi_rgb_std: float


@dataclass(frozen=True)
class Params:
    """All of params.yaml, one typed section per step."""

    dataset: DatasetConfig
    synthetic: SyntheticConfig
    folder: FolderConfig
    runtime: RuntimeConfig
    model: ModelConfig
    train_cam: TrainCamConfig
    train_expansion: TrainExpansionConfig
    train_shrinkage: TrainShrinkageConfig
    make_cam: MakeCamConfig
    eval_seeds: EvalSeedsConfig
    refine_crf: RefineCrfConfig
    train_irn: TrainIrnConfig
    make_sem_seg: MakeSemSegConfig
    train_seg: TrainSegConfig
    eval_seg: EvalSegConfig

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


T = TypeVar("T")


def _build(cls: type[T], values: dict[str, Any]) -> T:
    kwargs = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = values[field.name]
        if isinstance(value, list):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    return path or "<top level>"


def validate(raw: Any, source: str = "params.yaml") -> None:
    """Raise ConfigError naming the offending key if ``raw`` breaks the schema."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    messages = []
    for error in errors:
        key = _key_path(error)
        if error.validator == "additionalProperties":
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            prefix = f"{key}." if error.absolute_path else ""
            messages.append(f"unknown key(s) {', '.join(prefix + k for k in unknown)}")
        else:
            messages.append(f"{key}: {error.message}")
    raise ConfigError(f"{source}: " + "; ".join(messages))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def effective(raw: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Validate params and apply the recipe of ``dataset.name`` (``recipes.<name>``) on top.

    Every recipe is checked, merged over the sections, against the schema, so a typo in the VOC
    recipe fails on a synthetic run too. Returns the sections without the ``recipes`` key.
    """
    validate(raw, source)
    recipes = raw.get("recipes") or {}
    base = {k: v for k, v in raw.items() if k != "recipes"}
    for name, recipe in recipes.items():
        validate(deep_merge(base, recipe or {}), f"{source} (recipes.{name})")
    merged = deep_merge(base, recipes.get(raw["dataset"]["name"]) or {})
    dataset = merged["dataset"]
    if dataset["name"] == "voc12" and dataset["pseudo_label_split"] == "train_aug" and not dataset["sbd"]:
        raise ConfigError(
            f"{source}: dataset.pseudo_label_split: train_aug scores pseudo masks on VOC's 10,582 train_aug images, "
            "whose masks come from SBD; set dataset.sbd: true (or pseudo_label_split: train)"
        )
    return merged


def params_from_dict(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping, apply the dataset's recipe, and return its typed view."""
    raw = effective(raw, source)
    sections = {name: _build(section_type, raw[name]) for name, section_type in _SECTION_TYPES.items()}
    return Params(**sections)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, validate and type ``params.yaml``; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return params_from_dict(raw, str(path))


_SECTION_TYPES: dict[str, type] = {
    "dataset": DatasetConfig,
    "synthetic": SyntheticConfig,
    "folder": FolderConfig,
    "runtime": RuntimeConfig,
    "model": ModelConfig,
    "train_cam": TrainCamConfig,
    "train_expansion": TrainExpansionConfig,
    "train_shrinkage": TrainShrinkageConfig,
    "make_cam": MakeCamConfig,
    "eval_seeds": EvalSeedsConfig,
    "refine_crf": RefineCrfConfig,
    "train_irn": TrainIrnConfig,
    "make_sem_seg": MakeSemSegConfig,
    "train_seg": TrainSegConfig,
    "eval_seg": EvalSegConfig,
}
