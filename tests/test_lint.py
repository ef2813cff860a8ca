"""The code is formatted and lint-clean by the rules in pyproject.toml ([tool.ruff]): `make test-fast` fails
on either, so a change that breaks them is seen before review."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CODE = ["src", "tests", "examples"]


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_ruff_is_clean(command):
    ruff = Path(sys.executable).with_name(
        "ruff"
    )  # the binary itself: no Python start-up (the fast tier's rule)
    done = subprocess.run([str(ruff), *command, *CODE], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"`ruff {' '.join(command)}` (fix: ruff format; ruff check --fix):\n{done.stdout}"
    )
