"""From a validated configuration to a running engine: the one place the layers meet.

``load_engine`` is what both front ends call (the DJL entry point and
``djl-serve``): resolve the artifacts, pick the device, apply the Neuron
environment step, load the backend and the tokenizer, and build the engine.
Nothing below this function reads the environment or the raw properties.
"""

from __future__ import annotations

import logging
import time

from djl_python.artifacts import resolve_artifacts
from djl_python.backends.dispatch import load_backend, load_draft
from djl_python.config import HandlerConfig
from djl_python.config.chat_template import load_chat_template
from djl_python.engine.engine import Engine
from djl_python.engine.generation_defaults import GenerationDefaults

logger = logging.getLogger(__name__)


def load_tokenizer(model_dir: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """The model's own tokenizer (fast when available), with the chat template it ships."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code, revision=revision)


def load_engine(config: HandlerConfig) -> Engine:
    """Build the engine described by ``config``.

    Raises ``djl_python.artifacts.ArtifactError`` for an unusable model source or
    layout, and the backend's own errors (for example a load timeout) unchanged.
    """
    started = time.monotonic()
    artifacts = resolve_artifacts(config)
    backend = load_backend(config, artifacts)
    draft = load_draft(config, backend)
    tokenizer = load_tokenizer(str(artifacts.model_dir), trust_remote_code=config.trust_remote_code)
    if config.chat_template:  # option.chat_template / --chat-template replaces the model's own
        tokenizer.chat_template = load_chat_template(config.chat_template, config.origin("chat_template"))
    engine = Engine(
        backend,
        tokenizer,
        max_prefill_tokens=config.max_rolling_batch_prefill_tokens,
        generation_defaults=GenerationDefaults.from_model_dir(artifacts.model_dir),
        ngram_length=config.speculative_length if config.speculative_method == "ngram" else 0,
        chunked_prefill=config.enable_chunked_prefill,
        draft=draft,
        draft_length=config.speculative_length if draft is not None else 0,
    )
    if config.speculative_method == "ngram" and not engine.ngram_length:
        logger.warning("%s=ngram has no effect: the %s backend cannot verify proposed tokens (n-gram speculation "
                       "runs on the PyTorch backend)", config.origin("speculative_method"), backend.info.name)
    logger.info(
        "engine ready: backend=%s device=%s model_type=%s dtype=%s slots=%d n_positions=%d in %.1fs",
        backend.info.name,
        backend.info.device,
        backend.info.model_type,
        backend.info.dtype,
        backend.limits.max_slots,
        backend.limits.n_positions,
        time.monotonic() - started,
    )
    return engine
