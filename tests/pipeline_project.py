"""A throw-away copy of the project (git + DVC) with the smoke params, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import REPO, smoke_params_dict


def project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line and (REPO / line).is_file()]


def make_project(root: Path, params: dict | None = None) -> Path:
    """Copy the project to ``root``, write smoke params.yaml, and commit it to a fresh git repo."""
    for rel in project_files():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    (root / "params.yaml").write_text(yaml.safe_dump(params or smoke_params_dict(), sort_keys=False))
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.email", "test@localhost"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.name", "esol tests"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "smoke project"], cwd=root, check=True)
    return root


def env(root: Path) -> dict[str, str]:
    variables = dict(os.environ)
    variables["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{variables.get('PATH', '')}"
    variables["DVC_SITE_CACHE_DIR"] = str(root / ".dvc-site-cache")
    variables["DVC_NO_ANALYTICS"] = "1"
    return variables


def run(
    root: Path, *args: str, check: bool = True, timeout: int = 900, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``args`` in ``root`` (``extra_env``: variables set on top of the project's environment)."""
    variables = {**env(root), **(extra_env or {})}
    result = subprocess.run(list(args), cwd=root, env=variables, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result
