"""Fixtures for the Neuron backend tests: the transformers-neuronx TEST DOUBLE on sys.path.

``tnx`` imports ``tests/neuron_double/transformers_neuronx`` (never the real
package: the path is prepended and any cached module dropped), configures the
version it impersonates (``tnx.configure("0.9.474")``) and removes it from
``sys.modules`` afterwards so no other test sees it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

DOUBLE_ROOT = Path(__file__).resolve().parents[1] / "neuron_double"


def _drop_double() -> None:
    for name in [n for n in sys.modules if n == "transformers_neuronx" or n.startswith("transformers_neuronx.")]:
        del sys.modules[name]


@pytest.fixture
def tnx(monkeypatch: pytest.MonkeyPatch):
    """The double's control module (``configure``, ``CALLS``, ``events``), at version 0.13.380."""
    _drop_double()
    monkeypatch.syspath_prepend(str(DOUBLE_ROOT))
    from transformers_neuronx import _double

    assert Path(_double.__file__).is_relative_to(DOUBLE_ROOT)
    _double.configure()
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
    from djl_python.backends.neuron import NeuronBackend

    config = make_config(model_dir, **options)
    return NeuronBackend.load(config, resolve_artifacts(config))
