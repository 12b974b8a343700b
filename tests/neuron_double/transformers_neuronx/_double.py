"""Test-only controls of the double: the emulated release and the call log.

The release is chosen when the package is imported, from ``$TNX_DOUBLE_VERSION``
(see ``_versions.py``); the ``tnx`` fixture in ``tests/neuron/conftest.py`` sets
it and re-imports the package. ``CALLS`` records every API call in order, e.g.
``("to_neuron", "LlamaForSampling", "compile")``.
"""

from __future__ import annotations

from typing import Any

from transformers_neuronx._versions import Release, selected

CALLS: list[tuple[Any, ...]] = []
RELEASE: Release = selected()


def record(*event: Any) -> None:
    CALLS.append(event)


def events(name: str) -> list[tuple[Any, ...]]:
    return [call for call in CALLS if call[0] == name]
