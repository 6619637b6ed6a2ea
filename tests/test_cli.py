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
        step = next(w for w in words if w in STEPS)
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
    top = subprocess.run([sys.executable, "-m", "esol", "--help"], capture_output=True, text=True, cwd=REPO).stdout
    assert "make_figures" in top and "compare" in top
