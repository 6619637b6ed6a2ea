"""Shared by the bench scripts: inputs, interleaved timing, machine description, printed figures.

A figure is a ratio of two sides timed in the same process: each repetition runs every side once,
the order alternating between repetitions (A B, B A, ...), and the figure is the median over the
repetitions of the per-repetition ratio. Absolute times are printed for context only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
NO_GPU = "not measured: no GPU in this session"


# --- inputs -------------------------------------------------------------------------------


def params_dict(quick: bool, overrides: dict | None = None) -> dict:
    """params.yaml (default config), or with config/smoke.yaml merged over it (quick); then OVERRIDES."""
    from esol.infra.config import deep_merge

    merged = yaml.safe_load((REPO / "params.yaml").read_text())
    if quick:
        merged = deep_merge(merged, yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))
    return deep_merge(merged, overrides or {})


def synthetic_dataset(root: Path, params: dict, images: int):
    """Generate the synthetic dataset of PARAMS with IMAGES images in train (and train_aug)."""
    from esol.data.layout import Dataset
    from esol.data.synthetic import generate
    from esol.infra.config import deep_merge, params_from_dict

    sized = deep_merge(params, {"synthetic": {"num_train_aug": images, "num_train": images, "num_val": 1}})
    p = params_from_dict(sized)
    generate(root, p.synthetic, p.dataset.seed)
    return Dataset(root)


def untrained_model(params, dataset, path: Path | None = None):
    """A freshly initialised ESOLNet for DATASET (weights do not matter for speed); saved to PATH if given."""
    import torch

    from esol.training import checkpoint
    from esol.training.classifier import build_model

    torch.manual_seed(0)  # the same weights every time (the storage figure's seeds depend on them)
    model = build_model(params, dataset)
    if path is not None:
        checkpoint.save(path, {"model": model.state_dict(), "meta": {"stage": "untrained", "classes": dataset.classes}})
    return model


# --- timing -------------------------------------------------------------------------------


def interleaved(sides: dict[str, Callable[[], Any]], reps: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds per repetition of each side; the order of the sides alternates between repetitions."""
    names = list(sides)
    if warmup:
        for name in names:
            sides[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return times


@dataclass
class Stats:
    median: float
    low: float
    high: float
    values: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.median:.3g} (min {self.low:.3g}, max {self.high:.3g}, n={len(self.values)})"


def stats(values: list[float]) -> Stats:
    return Stats(statistics.median(values), min(values), max(values), list(values))


def ratios(numerator: list[float], denominator: list[float]) -> Stats:
    """Per-repetition ratio numerator[i] / denominator[i]."""
    return stats([a / b for a, b in zip(numerator, denominator, strict=True)])


# --- output -------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float | None
    target: str  # e.g. ">= 0.8"
    detail: str = ""
    spread: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        op, bound = self.target.split()
        return self.value >= float(bound) if op == ">=" else self.value <= float(bound)

    def line(self) -> str:
        if self.value is None:
            return f"FIGURE {self.name}: {self.note or NO_GPU} (target {self.target})"
        verdict = {True: "met", False: "NOT met"}[bool(self.met)]
        text = f"FIGURE {self.name}: {self.value:.3g} (target {self.target}: {verdict})"
        if self.spread:
            text += f" spread {self.spread}"
        if self.detail:
            text += f"; {self.detail}"
        return text


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny inputs, one repetition (CI: it runs, it prints)")
    p.add_argument("--reps", type=int, help="timed repetitions per side (default: 5, quick: 1)")
    p.add_argument("--json", type=Path, help="also write the figures and timings here")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of one run of the step")
    return p


def profile(fn: Callable[[], Any], top: int = 15) -> str:
    """cProfile of one call of FN: the TOP functions by own time (where the time goes)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fn)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "function calls" in line)
    return "\n".join(line for line in lines[start:] if line.strip())


def reps(args: argparse.Namespace, default: int = 5) -> int:
    return args.reps or (1 if args.quick else default)


def report(title: str, args: argparse.Namespace, figures: list[Figure], **extra: Any) -> None:
    """Print the machine, the command, extra context lines and one FIGURE line per figure."""
    info = machine()
    print(f"== {title}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"command: python -m bench.{Path(sys.argv[0]).stem} {' '.join(sys.argv[1:])}".rstrip())
    for key, value in extra.items():
        print(f"{key}: {value}")
    for figure in figures:
        print(figure.line())
    if args.json:
        payload = {"title": title, "machine": info, "argv": sys.argv, "figures": [asdict(f) for f in figures]}
        payload["extra"] = {k: (asdict(v) if isinstance(v, Stats) else v) for k, v in extra.items()}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
