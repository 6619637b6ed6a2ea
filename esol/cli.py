"""``esol <command>``, the one entry point: a pipeline step, or one of the commands around the pipeline.

``esol [--gpus N] <step> [options]`` runs one pipeline step by hand, exactly as the workflow does.

Options are generated from each step's ``run`` signature, so the command line, Snakemake and
DVC cannot disagree on what a step reads and writes. ``--gpus N`` leases N GPUs of its own for
the step (see ``esol.infra.devices``) before anything imports torch; exit status 3 means no device
came free in time. With more than one device, the steps that can use several (training, CAM
inference) run one process per device (``esol.infra.distributed``).
``esol STEP --help`` groups a step's options into the paths it reads, the
paths it writes and its settings.

The commands that are no step (``esol <command> --help`` for their options):

* ``esol compare``: metrics and changed params across DVC experiments and git revisions;
* ``esol show``: a finished run's headline metrics and ablation table;
* ``esol devices``: the GPU pool, the lock directory and who holds each device;
* ``esol study``: the ablation over several dataset seeds (``research/study.py``);
* ``esol predict``: a trained model's label maps (or a classifier's CAMs) for new images, on a leased GPU
  when ``--gpus`` is given;
* ``esol example-folder DIR``: a ten-image folder dataset to try ``dataset.name: folder`` on.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
import time
import typing
from pathlib import Path

from esol.infra import devices, distributed
from esol.infra.config import ConfigError, load_params
from esol.infra.io import InputError
from esol.infra.logs import setup_logging
from esol.infra.numerics import TrainingDiverged
from esol.steps import STEPS

log = logging.getLogger("esol")
USAGE = "esol [-h] [-v] [--log LOG] [--gpus N] STEP ... | esol COMMAND ..."
# Subcommands that are not pipeline steps: the module whose main(argv) runs each, and its summary.
COMMANDS = {
    "compare": ("esol.reporting.compare", "metrics and changed params across DVC experiments or git revisions"),
    "show": ("esol.reporting.show", "a finished run's headline metrics and ablation table"),
    "devices": ("esol.infra.devices", "the GPU pool, the lock directory and who holds each device"),
    "study": ("research.study", "the ablation over several dataset seeds (research/study.py)"),
    "example-folder": ("esol.data.folder_example", "write a ten-image example folder dataset (dataset.name: folder)"),
    # Runs a model: handed its arguments after the log file and the GPU lease are set up.
    "predict": ("esol.inference.predict", "a trained model's label maps or CAMs for new images"),
}
LEASED_COMMANDS = ("predict",)


def _option_help(hint, default) -> str | None:
    parts = ["one or more paths"] if typing.get_origin(hint) is list else []
    if default is not inspect.Parameter.empty and default is not None:
        parts.append(f"default: {default}")
    return "; ".join(parts) or None


def _summary(doc: str) -> str:
    """The docstring's first paragraph as one line (``esol --help`` lists it beside the step)."""
    return " ".join(doc.split("\n\n")[0].split())


def _add_step_parser(subparsers, name: str) -> None:
    """Options from ``run``'s signature: paths it writes (the module's ``OUTPUTS``) are outputs,
    other paths inputs, ``int``/``str`` arguments settings."""
    module = importlib.import_module(f"esol.steps.{name}")
    doc = inspect.getdoc(module.run) or ""
    outputs = set(getattr(module, "OUTPUTS", ()))
    parser = subparsers.add_parser(
        name,
        help=_summary(doc) if doc else name,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The rule in workflow/rules/ runs the same command; see dvc.yaml for the exact paths.",
    )
    groups = {
        "input": parser.add_argument_group("inputs (read)"),
        "output": parser.add_argument_group("outputs (written)"),
        "setting": parser.add_argument_group("settings"),
    }
    groups["setting"].add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)"
    )
    hints = typing.get_type_hints(module.run)
    for pname, param in inspect.signature(module.run).parameters.items():
        if pname == "params":
            continue
        hint = hints.get(pname)
        flag = "--" + pname.replace("_", "-")
        kwargs: dict = {"dest": pname, "required": param.default is inspect.Parameter.empty}
        if param.default is not inspect.Parameter.empty:
            kwargs["default"] = param.default
        if typing.get_origin(hint) is list:
            kwargs.update(type=Path, nargs="+")
        elif hint in (int, str):
            kwargs["type"] = hint
        else:
            kwargs["type"] = Path
        kind = "output" if pname in outputs else "setting" if hint in (int, str) else "input"
        kwargs["help"] = _option_help(hint, param.default)
        groups[kind].add_argument(flag, metavar=pname.upper(), **kwargs)


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--log", type=Path, help="send logging and progress bars (stderr) to this file")
    parser.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="lease N GPUs of its own for the step (sets CUDA_VISIBLE_DEVICES; 0 hides all GPUs); "
        "without it the step sees whatever CUDA_VISIBLE_DEVICES allows",
    )


def _command_index(argv: list[str]) -> int:
    """Where the step (or command) name is in ``argv``; ``len(argv)`` when there is none."""
    return next((i for i, arg in enumerate(argv) if arg in STEPS or arg in COMMANDS), len(argv))


def _global_options(argv: list[str]) -> argparse.Namespace:
    """The options before the step name, parsed without importing the steps (and so torch)."""
    end = _command_index(argv)
    parser = argparse.ArgumentParser(prog="esol", usage=USAGE, add_help=False, allow_abbrev=False)
    _add_global_options(parser)
    return parser.parse_known_args(argv[:end])[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="`esol STEP --help` lists what a step reads and writes.",
    )
    _add_global_options(parser)
    subparsers = parser.add_subparsers(dest="step", required=True, metavar="STEP | COMMAND")
    for name in STEPS:
        _add_step_parser(subparsers, name)
    for name, (_, summary) in COMMANDS.items():  # listed only: main() hands their arguments on
        subparsers.add_parser(name, help=f"{summary} (no step)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_index(argv)
    if command < len(argv) and argv[command] in COMMANDS and argv[command] not in LEASED_COMMANDS:
        # Handed their arguments as they are: they need neither the steps (torch) nor a GPU lease.
        module = importlib.import_module(COMMANDS[argv[command]][0])
        return module.main(argv[command + 1 :])
    # Log file and GPU lease first: building the full parser imports every step, and so torch,
    # which must not start CUDA before CUDA_VISIBLE_DEVICES names the leased devices.
    early = _global_options(argv)
    if early.log:
        early.log.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(early.log, "w", buffering=1)
        os.dup2(log_file.fileno(), sys.stderr.fileno())
    setup_logging(early.verbose)
    if early.gpus is not None:
        try:
            devices.claim(early.gpus)  # held until the process exits; the kernel then frees it
        except devices.DeviceError as exc:
            log.error("GPU lease failed: %s", exc)
            return 3
        # One process per device the step got (steps that can use several: see esol.infra.distributed).
        try:
            world = distributed.world_size_for_lease(early.gpus, os.environ)
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        os.environ[distributed.ENV_WORLD_SIZE] = str(world)
        if world > 1:
            log.info("%s=%d: training and CAM steps use %d processes", distributed.ENV_WORLD_SIZE, world, world)
    if command < len(argv) and argv[command] == "predict":
        from esol.inference import predict  # after the GPU lease: it runs a model

        return predict.main(argv[command + 1 :], logging_ready=True)
    args = build_parser().parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("step", "verbose", "params", "log", "gpus")}
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        module = importlib.import_module(f"esol.steps.{args.step}")
        module.run(params, **kwargs)
    except (ConfigError, InputError) as exc:
        log.error("%s failed: %s", args.step, exc)
        return 2
    except TrainingDiverged as exc:
        log.error("%s failed: training diverged: %s", args.step, exc)
        return 4
    log.info("%s done in %.1f s", args.step, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
