"""Fixtures for the Neuron backend tests: the transformers-neuronx TEST DOUBLE on sys.path.

``tnx`` imports ``tests/neuron_double/transformers_neuronx`` (never the real
package: the path is prepended and any cached module dropped) emulating one
release: the fixture's parameter (``@pytest.mark.parametrize("tnx", ["0.9"],
indirect=True)``), else ``$TNX_DOUBLE_VERSION``, else 0.13 (labels in
``tests/neuron_double/transformers_neuronx/_versions.py``). It is removed from
``sys.modules`` afterwards so no other test sees it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

DOUBLE_ROOT = Path(__file__).resolve().parents[1] / "neuron_double"


def _drop_double() -> None:
    for name in [n for n in sys.modules if n == "transformers_neuronx" or n.startswith("transformers_neuronx.")]:
        del sys.modules[name]


ENV = "TNX_DOUBLE_VERSION"
MATRIX = ("0.9", "0.10-early", "0.10-late", "0.11", "0.13")  # the releases every equivalence test runs on


@pytest.fixture
def tnx(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The double's control module (``RELEASE``, ``CALLS``, ``events``) for the requested release."""
    _drop_double()
    monkeypatch.setenv(ENV, getattr(request, "param", None) or os.environ.get(ENV, "0.13"))
    monkeypatch.syspath_prepend(str(DOUBLE_ROOT))
    from transformers_neuronx import _double

    assert Path(_double.__file__).is_relative_to(DOUBLE_ROOT)
    yield _double
    _drop_double()


def make_config(model_dir: Path, **options: Any):
    """A ``HandlerConfig`` for ``model_dir`` from LMI options (as strings, like serving.properties)."""
    from djl_python.config import load_config

    properties = {"option.model_id": str(model_dir), "option.device": "neuron",
                  **{f"option.{k}": str(v) for k, v in options.items()}}
    return load_config(properties=properties, env={})


def load_neuron(model_dir: Path, **options: Any):
    """Resolve the artifacts and load the Neuron backend through the double."""
    from djl_python.artifacts import resolve_artifacts
    from djl_python.backends.dispatch import load_backend

    config = make_config(model_dir, **options)
    return load_backend(config, resolve_artifacts(config))
