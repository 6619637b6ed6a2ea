"""The `esol` command line: options from each step's run() signature, grouped by what the step
reads and writes, and in agreement with the workflow."""

from __future__ import annotations

import subprocess
import sys

import yaml

from esol.steps import STEPS

from .conftest import REPO


def test_every_step_names_its_outputs_among_its_arguments():
    import importlib
    import inspect

    for name in STEPS:
        module = importlib.import_module(f"esol.steps.{name}")
        arguments = set(inspect.signature(module.run).parameters)
        assert module.OUTPUTS and set(module.OUTPUTS) <= arguments, name


def test_step_outputs_agree_with_the_workflow():
    """A flag the step calls an output is what dvc.yaml (the Snakefile) lists as the stage's outputs,
    and the other path flags are its dependencies."""
    import importlib
    import shlex

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage_name, stage in stages.items():
        words = shlex.split(stage["cmd"])
        step = next((w for w in words if w in STEPS), None)
        if step is None:  # the one stage that is no esol step: seg.pt copied from the final variant's net
            assert stage_name == "final_seg_model", f"{stage_name}: no esol step in {stage['cmd']!r}"
            continue
        module = importlib.import_module(f"esol.steps.{step}")
        produced = set()
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                produced.add(path.removesuffix("/plots/metrics"))
        flags: dict[str, list[str]] = {}
        for word in words[words.index(step) + 1 :]:
            if word.startswith("--"):
                current = flags.setdefault(word[2:].replace("-", "_"), [])
            else:
                current.append(word)
        for flag, values in flags.items():
            if flag in module.OUTPUTS and flag not in ("checkpoint_dir", "downloads"):
                assert set(values) <= produced, f"{stage_name}: --{flag} {values} is no output of the stage"
            elif any(v in produced for v in values):
                raise AssertionError(f"{stage_name}: --{flag} writes {values} but {step}.OUTPUTS omits it")


def test_step_help_groups_inputs_outputs_and_settings():
    result = subprocess.run(
        [sys.executable, "-m", "esol", "eval_seeds", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout[result.stdout.index("inputs (read):") :]  # after the usage line
    outputs, settings = text.index("outputs (written):"), text.index("settings:")
    assert text.index("--cams") < outputs < text.index("--metrics") < text.index("--curve") < settings
    assert text.index("--variant") > settings


def esol(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "esol", *args], capture_output=True, text=True, cwd=cwd)


def test_esol_help_lists_every_step_and_every_command():
    from esol.cli import COMMANDS

    top = esol("--help").stdout
    for name in (*STEPS, *COMMANDS):
        assert f"    {name} " in top or f"    {name}\n" in top, name
    assert set(COMMANDS) == {"compare", "show", "devices", "study", "predict", "example-folder"}


def test_commands_take_their_own_options_under_esol(tmp_path):
    """Each command is reached as `esol <command>`, its options handed on untouched."""
    empty = esol("show", "--metrics-dir", str(tmp_path))
    assert empty.returncode == 1 and "no metrics in" in empty.stderr
    (tmp_path / "seeds.json").write_text('{"miou": 41.5, "precision": 50.0, "recall": 60.0}')
    shown = esol("show", "--metrics-dir", str(tmp_path))
    assert shown.returncode == 0 and "41.5" in shown.stdout, shown.stderr
    study = esol("study", "--help")
    assert study.returncode == 0 and "usage: esol study" in study.stdout and "--configfile" in study.stdout
    devices = esol("devices", "--bogus")
    assert devices.returncode == 2 and "usage: esol devices" in devices.stderr
