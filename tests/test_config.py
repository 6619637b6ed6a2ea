import dataclasses
import subprocess
import sys

import pytest
import yaml

from esol.infra import config
from esol.infra.config import ConfigError, load_params, params_from_dict

from .conftest import REPO, smoke_params_dict


def test_shipped_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.dataset.name == "synthetic"
    assert params.make_cam.scales == (1.0, 0.5, 1.5, 2.0)


def test_every_schema_section_has_a_typed_dataclass_with_the_same_keys():
    schema = config.load_schema()
    for name, section_type in config._SECTION_TYPES.items():
        fields = {f.name for f in dataclasses.fields(section_type)}
        assert fields == set(schema["properties"][name]["properties"]), name
        assert fields == set(schema["properties"][name]["required"]), name
    assert set(config._SECTION_TYPES) == set(schema["properties"]) - {"recipes"}


def _schema_properties(node: dict, path: str = ""):
    """Every (dotted key, property schema) pair below ``node``, sections before their keys."""
    for name, prop in node.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        yield key, prop
        yield from _schema_properties(prop, key)


def test_every_key_is_documented_once_in_the_schema_with_the_shipped_value_as_its_default():
    """The schema is the one place a key is documented: each property has a description, each key
    (a property without sub-properties) a default equal to params.yaml's value. Recipes are data
    over those keys, so their entries have a description only."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    checked = 0
    for key, prop in _schema_properties(config.load_schema()):
        assert prop.get("description", "").strip(), f"{key}: no description"
        if "properties" in prop or key.startswith("recipes"):
            continue
        value = shipped
        for part in key.split("."):
            value = value[part]
        assert "default" in prop, f"{key}: no default"
        assert prop["default"] == value and type(prop["default"]) is type(value), f"{key}: default != params.yaml"
        checked += 1
    assert checked > 60


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train_cam", "learning_rate", 0.1, "unknown key(s) train_cam.learning_rate"),
        ("train_cam", "epochs", "five", "train_cam.epochs"),
        ("train_cam", "epochs", 0, "train_cam.epochs"),
        ("model", "clip_quantile", 1.5, "model.clip_quantile"),
        ("model", "clip_mode", "soft", "model.clip_mode"),
        ("runtime", "deterministic", "False", "runtime.deterministic"),
    ],
)
def test_bad_values_name_the_key(section, key, value, message):
    raw = smoke_params_dict()
    raw[section][key] = value
    with pytest.raises(ConfigError) as info:
        params_from_dict(raw)
    assert message in str(info.value)


def test_unknown_section_is_named():
    raw = smoke_params_dict()
    raw["train_cams"] = {}
    with pytest.raises(ConfigError, match=r"unknown key.*train_cams"):
        params_from_dict(raw)


def test_cli_refuses_bad_params_with_nonzero_exit(tmp_path):
    raw = smoke_params_dict()
    raw["train_shrinkage"]["area_weight"] = "high"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = tmp_path / "data"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "esol",
            "prepare_data",
            "--params",
            str(bad),
            "--sources",
            str(tmp_path / "sources.json"),
            "--out-dir",
            str(out),
            "--metrics",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "train_shrinkage.area_weight" in result.stderr
    assert not out.exists() and not (tmp_path / "m.json").exists()


def test_recipe_of_the_selected_dataset_applies():
    raw = smoke_params_dict()
    raw["recipes"] = {"voc12": {"model": {"backbone": "resnet50"}}, "synthetic": {"train_cam": {"epochs": 3}}}
    assert params_from_dict(raw).train_cam.epochs == 3
    assert params_from_dict(raw).model.backbone == "resnet_small"
    raw["dataset"]["name"] = "voc12"
    assert params_from_dict(raw).model.backbone == "resnet50"


def test_typo_in_an_inactive_recipe_is_still_caught():
    raw = smoke_params_dict()
    raw["recipes"] = {"coco14": {"train_cam": {"epoch": 3}}}
    with pytest.raises(ConfigError, match=r"recipes\.coco14.*train_cam\.epoch"):
        params_from_dict(raw)
