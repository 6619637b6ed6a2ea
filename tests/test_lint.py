import subprocess
import sys
from pathlib import Path

from .conftest import REPO

BIN = Path(sys.executable).parent


def test_ruff_is_clean():
    result = subprocess.run([BIN / "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_formatted_as_snakefmt_formats_them():
    # the same command as `make lint` (line length 120, as ruff's)
    result = subprocess.run(
        [BIN / "snakefmt", "--check", "--line-length", "120", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_is_clean():
    result = subprocess.run([BIN / "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr
