"""Which device serves the model, and the one dispatch from configuration to a backend.

``device=auto`` picks, in order: Neuron when a Neuron device node
(``/dev/neuron*``) exists *and* transformers-neuronx imports; CUDA when
``torch.cuda.is_available()``; otherwise CPU. An explicit device is used as
given (its backend reports what is missing). One log line records the choice.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import TYPE_CHECKING

from djl_python.backends.base import Backend

if TYPE_CHECKING:
    from djl_python.artifacts import ModelArtifacts
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)
DEVICES = ("neuron", "cuda", "cpu")
CORES_PER_NEURON_DEVICE = 2  # Inferentia2 and Trainium1: two NeuronCores per /dev/neuronN


def neuron_devices() -> list[str]:
    """The Neuron device nodes present on this host."""
    return sorted(glob.glob("/dev/neuron*"))


def neuron_core_count() -> int:
    """Visible NeuronCores: ``NEURON_RT_NUM_CORES`` if set, else two per device node."""
    configured = os.environ.get("NEURON_RT_NUM_CORES", "").strip()
    if configured.isdigit():
        return int(configured)
    return CORES_PER_NEURON_DEVICE * len(neuron_devices())


def tnx_importable() -> bool:
    return importlib.util.find_spec("transformers_neuronx") is not None


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def select_device(requested: str = "auto") -> str:
    """``neuron``, ``cuda`` or ``cpu`` for a configured ``device`` (see the module docstring)."""
    requested = (requested or "auto").strip().lower()
    if requested in DEVICES:
        logger.info("device: %s (configured)", requested)
        return requested
    if requested != "auto":
        raise ValueError(f"option.device={requested!r} must be one of auto, {', '.join(DEVICES)}")
    devices = neuron_devices()
    if devices and tnx_importable():
        choice, why = "neuron", f"{len(devices)} Neuron device(s) and transformers-neuronx found"
    elif cuda_available():
        choice, why = "cuda", "torch.cuda.is_available()" + (
            "; Neuron devices present but transformers-neuronx is not installed" if devices else "")
    else:
        choice, why = "cpu", "no Neuron device with transformers-neuronx, no CUDA" + (
            f" ({len(devices)} Neuron device(s) present but transformers-neuronx is not installed)" if devices else "")
    logger.info("device: %s (auto: %s)", choice, why)
    return choice


def load_backend(config: HandlerConfig, artifacts: ModelArtifacts) -> Backend:
    """Build the backend for ``config.device`` (after ``select_device``) from resolved ``artifacts``."""
    device = select_device(config.device)
    if device == "neuron":
        from djl_python.backends.neuron import NeuronBackend

        return NeuronBackend.load(config, artifacts)
    from djl_python.backends.cpu_policy import bound_shape_caches
    from djl_python.backends.memory import check_budget, plan_memory
    from djl_python.backends.pytorch import PyTorchBackend

    warn_tensor_parallel(config, device)
    if device == "cpu":
        bound_shape_caches()  # before the memory plan, whose probe creates the first oneDNN primitive
    # Settings adopted from compiled artifacts (unset in the configuration) apply here too.
    adopted = getattr(artifacts, "adopted", {}) or {}
    rolling = config.rolling_batch_enabled
    max_slots = config.max_rolling_batch_size if rolling else config.batch_size
    shape = {
        "max_slots": int(adopted.get("max_rolling_batch_size" if rolling else "batch_size", max_slots)),
        "n_positions": config.n_positions or adopted.get("n_positions"),
        "dtype": config.dtype or adopted.get("dtype"),
        "device": device,
        "trust_remote_code": config.trust_remote_code,
    }
    # Before any allocation: a configuration that cannot fit fails here, naming its options.
    check_budget(plan_memory(artifacts.checkpoint_dir, **shape), config, device)
    return PyTorchBackend.load(artifacts.checkpoint_dir, prefill_buckets=config.context_length_estimate, **shape)


def warn_tensor_parallel(config: HandlerConfig, device: str) -> None:
    """The PyTorch backend runs on one device: a tensor-parallel degree other than 1 is not
    applied, and the log says so under the key the user wrote."""
    if config.tensor_parallel_degree != 1:
        logger.warning("%s=%s is ignored: the PyTorch backend (%s) runs the model on one device; "
                       "tensor parallelism applies to the Neuron backend only",
                       config.origin("tensor_parallel_degree"), config.tensor_parallel_degree, device)
