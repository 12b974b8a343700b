"""``docker/serve``'s arguments to ``djl-serve``, read from the environment (a stub djl-serve echoes them).

The script passes only ``--host``, ``--port`` and ``--model-dir`` (the CLI's stable flags) plus what
the caller adds; everything else is configuration djl-serve reads from the environment itself.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.repo_files import REPO

SERVE = REPO / "docker/serve"


@pytest.fixture()
def run(tmp_path):
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "djl-serve"
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)

    def call(*args: str, **env: str) -> str:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("SM_", "SAGEMAKER_", "DJL_SERVE_")) and k != "SERVING_LOAD_MODELS"}
        base["PATH"] = f"{stub_dir}{os.pathsep}{base.get('PATH', '')}"
        base.setdefault("SM_MODEL_DIR", str(tmp_path / "absent"))
        proc = subprocess.run([str(SERVE), *args], env={**base, **env}, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    return call


def test_sagemaker_start(run, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    assert run("serve", SM_MODEL_DIR=str(model)) == f"--host 0.0.0.0 --port 8080 --model-dir {model}"


def test_port_from_sagemaker_then_djl_serve_port(run):
    assert run("serve", SAGEMAKER_BIND_TO_PORT="9001", DJL_SERVE_PORT="9002") == "--host 0.0.0.0 --port 9001"
    assert run("serve", DJL_SERVE_PORT="9002") == "--host 0.0.0.0 --port 9002"


def test_no_model_dir_when_absent_or_named_by_serving_load_models(run, tmp_path):
    assert run("serve") == "--host 0.0.0.0 --port 8080"
    model = tmp_path / "model"
    model.mkdir()
    # djl-serve takes the folder from SERVING_LOAD_MODELS itself; passing another would override it.
    assert run("serve", SM_MODEL_DIR=str(model), SERVING_LOAD_MODELS="test::Python=/elsewhere") == \
        "--host 0.0.0.0 --port 8080"


def test_without_the_serve_word_and_with_extra_flags(run):
    assert run() == "--host 0.0.0.0 --port 8080"
    assert run("--log-level", "debug", DJL_SERVE_HOST="127.0.0.1") == "--host 127.0.0.1 --port 8080 --log-level debug"
    assert run("serve", "--shutdown-grace", "5") == "--host 0.0.0.0 --port 8080 --shutdown-grace 5"


def test_another_command_is_run_instead(run):
    """``docker run IMAGE bash`` and the like: a first argument other than `serve` or a flag is run."""
    assert run("sh", "-c", "echo entry-ok") == "entry-ok"
