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

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


class ConfigError(ValueError):
    """params.yaml is missing, malformed, or breaks the schema."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    seed: int


@dataclass(frozen=True)
class SyntheticConfig:
    image_size: int
    num_classes: int
    num_train_aug: int
    num_train: int
    num_val: int
    max_objects: int
    part_fraction: float
    body_tint: float
    context_prob: float


@dataclass(frozen=True)
class RuntimeConfig:
    device: str
    num_workers: int
    amp: str
    channels_last: str
    deterministic: bool


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
    clip_value: float
    clip_from: str  # "cam": every stage clips; "expansion": stage 0 and the shrinkage-only variant do not
    w2_init: str


@dataclass(frozen=True)
class TrainCamConfig:
    epochs: int
    batch_size: int
    crop_size: int
    optimizer: str
    lr: float
    lr_new: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class TrainExpansionConfig:
    epochs: int
    batch_size: int
    crop_size: int
    optimizer: str
    lr: float
    lr_offset: float
    grl_scale: float
    momentum: float
    weight_decay: float
    clip_quantile: float | None  # clip quantile while training stage 1 (None: model.clip_quantile)
    offset_penalty: float  # weight of mean |o1|^2 (cells^2), minimised by off1 beside the reversed L_cls


@dataclass(frozen=True)
class TrainShrinkageConfig:
    epochs: int
    batch_size: int
    crop_size: int
    optimizer: str
    lr: float
    lr_offset: float
    area_weight: float
    area_form: str
    area_target: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class MakeCamConfig:
    scales: tuple[float, ...]
    flip: bool
    batch_size: int


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
    variant_thresholds: dict[str, list[float]]  # variant -> [fg, bg], over the two above

    def for_variant(self, variant: str) -> RefineCrfConfig:
        """These settings with ``variant``'s own thresholds, when it has any."""
        if variant not in self.variant_thresholds:
            return self
        fg, bg = self.variant_thresholds[variant]
        return dataclasses.replace(self, fg_threshold=fg, bg_threshold=bg)


@dataclass(frozen=True)
class TrainSegConfig:
    arch: str
    epochs: int
    batch_size: int
    crop_size: int
    lr: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class EvalSegConfig:
    batch_size: int


@dataclass(frozen=True)
class Params:
    """All of params.yaml, one typed section per step."""

    dataset: DatasetConfig
    synthetic: SyntheticConfig
    runtime: RuntimeConfig
    model: ModelConfig
    train_cam: TrainCamConfig
    train_expansion: TrainExpansionConfig
    train_shrinkage: TrainShrinkageConfig
    make_cam: MakeCamConfig
    eval_seeds: EvalSeedsConfig
    refine_crf: RefineCrfConfig
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
    return deep_merge(base, recipes.get(raw["dataset"]["name"]) or {})


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
    "runtime": RuntimeConfig,
    "model": ModelConfig,
    "train_cam": TrainCamConfig,
    "train_expansion": TrainExpansionConfig,
    "train_shrinkage": TrainShrinkageConfig,
    "make_cam": MakeCamConfig,
    "eval_seeds": EvalSeedsConfig,
    "refine_crf": RefineCrfConfig,
    "train_seg": TrainSegConfig,
    "eval_seg": EvalSegConfig,
}
