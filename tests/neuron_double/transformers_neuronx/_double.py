"""Test-only controls of the double: the version to impersonate and the call log.

``configure("0.9.474")`` makes the package look like that release: its
``__version__``, the ``NeuronConfig`` form (``**kargs`` with that release's keys
up to 0.10) and which top-level names exist (``NeuronAutoModelForCausalLM``
from 0.10, ``Layout`` from 0.11, ``GQA`` from 0.9). ``CALLS`` records every API
call in order, e.g. ``("to_neuron", "LlamaForSampling", "compile")``.
"""

from __future__ import annotations

import re
from typing import Any

CALLS: list[tuple[Any, ...]] = []
DEFAULT_VERSION = "0.13.380"


def record(*event: Any) -> None:
    CALLS.append(event)


def events(name: str) -> list[tuple[Any, ...]]:
    return [call for call in CALLS if call[0] == name]


def configure(version: str = DEFAULT_VERSION) -> None:
    import transformers_neuronx as tnx
    from transformers_neuronx import config, constants, modeling_auto, version as version_module

    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", version).groups())
    CALLS.clear()
    tnx.__version__ = version_module.__version__ = version
    if (major, minor) >= (0, 11):
        tnx.NeuronConfig = config.NeuronConfig
    else:
        legacy = type("NeuronConfig", (config.LegacyNeuronConfig,), {"version": (major, min(minor, 10))})
        tnx.NeuronConfig = legacy
    optional = {
        "NeuronAutoModelForCausalLM": ((0, 10), modeling_auto.NeuronAutoModelForCausalLM),
        "Layout": ((0, 11), constants.Layout),
        "GQA": ((0, 9), constants.GQA),
    }
    for name, (since, value) in optional.items():
        if (major, minor) >= since:
            setattr(tnx, name, value)
        elif hasattr(tnx, name):
            delattr(tnx, name)
