"""Style is never a review topic: `ruff check` and `ruff format --check` (configured in pyproject.toml) pass on the
code, the tests, the benchmarks and the examples."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


PARTS = ["src", "tests", "benchmarks", "examples"]


@pytest.mark.parametrize(
    "command", [["check", "--no-cache"], ["format", "--check", "--no-cache"]], ids=["lint", "format"]
)
def test_ruff_passes(command):
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed: pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *PARTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
