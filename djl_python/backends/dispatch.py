"""Which device serves the model, and the one dispatch from configuration to a backend.

``device=auto`` picks, in order: Neuron when a Neuron device node
(``/dev/neuron*``) exists *and* transformers-neuronx imports; CUDA when
``torch.cuda.is_available()``; otherwise CPU. An explicit device is used as
given (its backend reports what is missing). One log line records the choice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from djl_python.backends.base import Backend
from djl_python.config.errors import ConfigError, ConfigProblem
from djl_python.backends.neuron.devices import neuron_devices, tnx_importable

if TYPE_CHECKING:
    from djl_python.artifacts import ModelArtifacts
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)
DEVICES = ("neuron", "cuda", "cpu")


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
    """Build the backend for ``config.device`` (after ``select_device``) from resolved ``artifacts``.

    The shape is settled here, once, before either backend reads it: the settings the
    compiled artifacts fix and the configuration left unset are merged into the
    configuration (:meth:`HandlerConfig.with_compiled_settings`); both backends then read
    ``config.max_slots``, ``n_positions`` and ``dtype`` and nothing else.
    """
    config = config.with_compiled_settings(artifacts.adopted)
    device = select_device(config.device)
    if device == "neuron":
        from djl_python.backends.neuron.load import load_neuron_backend

        warn_pytorch_only(config)
        return load_neuron_backend(config, artifacts)
    from djl_python.backends.pytorch.cpu_policy import bound_shape_caches
    from djl_python.backends.pytorch.memory import check_budget, plan_memory, with_prefix_cache
    from djl_python.backends.pytorch.backend import PyTorchBackend

    warn_tensor_parallel(config, device)
    if device == "cpu":
        bound_shape_caches()  # before the memory plan, whose probe creates the first oneDNN primitive
    shape = {
        "max_slots": config.max_slots,
        "n_positions": config.n_positions,
        "dtype": config.dtype,
        "device": device,
        "trust_remote_code": config.trust_remote_code,
    }
    # Before any allocation: a configuration that cannot fit fails here, naming its options.
    plan = with_prefix_cache(plan_memory(artifacts.checkpoint_dir, **shape), config, device)
    check_budget(plan, config, device)
    backend = PyTorchBackend.load(artifacts.checkpoint_dir, prefill_buckets=config.context_length_estimate,
                                  prefix_cache_rows=plan.cache_rows, **shape)
    backend.info.extra["memory_plan_bytes"] = plan.total_bytes
    return backend


def load_draft(config: HandlerConfig, target: Backend) -> Backend | None:
    """The PyTorch backend's draft model (``option.speculative_draft_model``), or None: none set, or a
    Neuron target (whose draft its own backend loads). The draft gets the target's slots, ``n_positions``,
    dtype and device, no prefix cache; its memory plan is checked against what the target left:
    ``memory_budget`` less the target's plan when set, else the memory available now. ``ConfigError``
    naming the key when its vocabulary differs from the target's."""
    if not config.speculative_draft_model or target.info.name != "pytorch":
        return None
    from djl_python.artifacts import resolve_artifacts
    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.backends.pytorch.memory import check_budget, plan_memory

    key = config.origin("speculative_draft_model")
    update: dict[str, object] = {"model_id": config.speculative_draft_model, "model_dir": None,
                                 "compiled_graph_path": None, "speculative_draft_model": None}
    if config.memory_budget is not None:
        target_bytes = int(target.info.extra.get("memory_plan_bytes", 0))  # type: ignore[call-overload]
        update["memory_budget"] = max(config.memory_budget - target_bytes, 1)
    draft_config = config.model_copy(update=update)
    artifacts = resolve_artifacts(draft_config)
    shape = {"max_slots": target.limits.max_slots, "n_positions": target.limits.n_positions, "dtype": config.dtype,
             "device": target.info.device, "trust_remote_code": config.trust_remote_code}
    check_budget(plan_memory(artifacts.checkpoint_dir, **shape), draft_config, target.info.device)
    draft = PyTorchBackend.load(artifacts.checkpoint_dir, **shape)
    draft.info.extra["model_dir"] = str(artifacts.model_dir)  # its tokenizer, if any (loader.warn_draft_tokenizer)
    if draft.limits.vocab_size != target.limits.vocab_size:
        raise ConfigError([ConfigProblem(key, config.speculative_draft_model,
                                         f"{key}: the draft's vocabulary ({draft.limits.vocab_size} logits) differs "
                                         f"from the model's ({target.limits.vocab_size}); a draft must share the "
                                         f"model's tokenizer", message_names_key=True)])
    logger.info("speculative decoding with draft %s (%s forward), %d tokens per step", config.speculative_draft_model,
                draft.info.extra.get("forward"), config.speculative_length)
    return draft


def warn_pytorch_only(config: HandlerConfig) -> None:
    """The prefix cache and chunked prefill are the PyTorch backend's: set for a Neuron load, the log
    says they do nothing (docs/neuron.md says why), under the key the user wrote."""
    for key, what in (("enable_prefix_caching", "prefix caching"), ("prefix_cache_rows", "prefix caching"),
                      ("enable_chunked_prefill", "chunked prefill")):
        if key in config.model_fields_set and getattr(config, key):
            logger.warning("%s has no effect on Neuron: %s runs on the PyTorch backend only "
                           "(docs/neuron.md)", config.origin(key), what)


def warn_tensor_parallel(config: HandlerConfig, device: str) -> None:
    """The PyTorch backend runs on one device: a tensor-parallel degree other than 1 is not
    applied, and the log says so under the key the user wrote."""
    if config.tensor_parallel_degree != 1:
        logger.warning("%s=%s is ignored: the PyTorch backend (%s) runs the model on one device; "
                       "tensor parallelism applies to the Neuron backend only",
                       config.origin("tensor_parallel_degree"), config.tensor_parallel_degree, device)
