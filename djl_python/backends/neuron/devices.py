"""The NeuronCores this host has and this process may use, by the Neuron runtime's rules.

Pure reads of ``/dev/neuron*`` and the ``NEURON_RT_*`` environment; nothing here
imports transformers-neuronx or torch, so device selection can ask without loading either.
"""

from __future__ import annotations

import glob
import importlib.util
import os

from djl_python.config.errors import ConfigError, ConfigProblem

CORES_PER_NEURON_DEVICE = 2  # Inferentia2 and Trainium1: two NeuronCores per /dev/neuronN


def neuron_devices() -> list[str]:
    """The Neuron device nodes present on this host."""
    return sorted(glob.glob("/dev/neuron*"))


def tnx_importable() -> bool:
    """Whether transformers-neuronx is installed (found without importing it)."""
    return importlib.util.find_spec("transformers_neuronx") is not None


def neuron_core_count() -> int:
    """Cores on this host: ``NEURON_RT_NUM_CORES`` if set, else two per device node."""
    configured = os.environ.get("NEURON_RT_NUM_CORES", "").strip()
    if configured.isdigit():
        return int(configured)
    return CORES_PER_NEURON_DEVICE * len(neuron_devices())


def visible_core_count() -> int:
    """NeuronCores this process may use: ``NEURON_RT_VISIBLE_CORES`` (``"2"``, ``"0-3"``, ``"0,1,4-5"``) when
    set, else :func:`neuron_core_count` (the Neuron runtime's own precedence). Raises
    ``ConfigError`` naming the variable for a value the runtime would refuse."""
    visible = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
    if not visible:
        return neuron_core_count()
    cores: set[int] = set()
    try:
        for part in visible.split(","):
            first, _, last = part.strip().partition("-")
            cores.update(range(int(first), int(last or first) + 1))
    except ValueError as err:
        raise ConfigError([ConfigProblem("NEURON_RT_VISIBLE_CORES", visible,
                                         "expected core ids like 0-3 or 0,1,4-5")]) from err
    return len(cores)
