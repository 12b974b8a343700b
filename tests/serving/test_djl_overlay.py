"""The LMI Neuron overlay image installs this package where DJL runs its engine from (it is not built
here: no Docker daemon, no Inferentia; tests/deploy lints it with hadolint like every Dockerfile)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "docker" / "lmi-neuron-overlay"


def test_overlay_installs_into_djls_engine_folder_and_keeps_djls_entrypoint():
    text = (OVERLAY / "Dockerfile").read_text()
    assert "FROM ${LMI_IMAGE}" in text and "deepjavalibrary/djl-serving:0.28.0-pytorch-inf2" in text
    # The image sets DJL_CACHE_DIR=/tmp/.djl.ai; Java's engine folder is <cache>/python/<version>.
    assert 'djl-engine-install --target "/tmp/.djl.ai/python/${DJL_VERSION}"' in text
    entry = (OVERLAY / "entrypoint.sh").read_text()
    assert "djl-engine-install" in entry and "exec /usr/local/bin/dockerd-entrypoint.sh" in entry
    assert (OVERLAY / "entrypoint.sh").stat().st_mode & 0o111
