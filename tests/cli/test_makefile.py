"""`make serve` prepares the default model only when it will serve it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(*variables: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "serve", *variables], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    return out.stdout.splitlines()


def test_a_named_model_skips_the_default_model() -> None:
    for variables, flags in ((("MODEL_DIR=/srv/model",), "--model-dir /srv/model"), (("MODEL=org/model",), "org/model")):
        lines = _dry_run(*variables)
        assert not any("djl_python.default_model" in line for line in lines), lines
        assert any("djl-serve" in line and flags in line for line in lines), lines


def test_no_model_prepares_the_default_model() -> None:
    assert any("-m djl_python.default_model" in line for line in _dry_run())
