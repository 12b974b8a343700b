"""From a validated configuration to a running engine: the one place the layers meet.

``load_engine`` is what both front ends call (the DJL entry point and
``djl-serve``): resolve the artifacts, pick the device, apply the Neuron
environment step, load the backend and the tokenizer, and build the engine.
Nothing below this function reads the environment or the raw properties.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


# Vocabulary files: a folder holds one when it ships a tokenizer (without one, AutoTokenizer may
# build a stand-in of a token or two for some model types).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer.tiktoken")
# A draft's tokenizer should share at least this share of its tokens with the model's.
DRAFT_SHARED_TOKENS = 0.9


def base_vocabulary(tokenizer: Any) -> dict[str, int]:
    """Token -> id of a tokenizer's own vocabulary, without added tokens where the tokenizer can say
    (fast tokenizers): model families rename and renumber their added special tokens between
    releases, and a draft's proposals are ordinary tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.get_vocab(with_added_tokens=False)
    return tokenizer.get_vocab()


def draft_vocabulary_problem(model: Mapping[str, int], draft: Mapping[str, int]) -> str | None:
    """Why a draft with tokenizer vocabulary ``draft`` would propose tokens the model names otherwise
    (both token -> id), or None: a token both hold at different ids, or fewer than
    :data:`DRAFT_SHARED_TOKENS` of the draft's tokens known to the model."""
    if not draft:
        return None
    shared = model.keys() & draft.keys()
    moved = sorted(token for token in shared if model[token] != draft[token])
    if moved:
        examples = ", ".join(f"{token!r} {draft[token]} -> {model[token]}" for token in moved[:3])
        return f"{len(moved)} of the {len(shared)} tokens both tokenizers hold have other ids ({examples})"
    if len(shared) < DRAFT_SHARED_TOKENS * len(draft):
        return f"the model's tokenizer holds only {len(shared)} of the draft's {len(draft)} tokens"
    return None


def warn_draft_tokenizer(config: HandlerConfig, tokenizer: Any, draft_dir: Path, draft_width: int) -> None:
    """Warn, naming ``speculative_draft_model``, when the draft's tokenizer numbers tokens otherwise
    than the model's. A warning, not a refusal: output stays what plain decoding gives whatever the
    draft proposes (only the model's own tokens are kept), but proposals that name other tokens are
    rarely kept, so every step pays for the draft for nothing. Skipped where the draft's folder
    ships no vocabulary file or its tokenizer holds under half as many tokens as the draft has
    logits (a stand-in); a tokenizer that cannot be read is reported, never fatal."""
    key = config.origin("speculative_draft_model")
    if not any((draft_dir / name).exists() for name in TOKENIZER_FILES):
        logger.info("%s: the draft's folder has no tokenizer; only its logits width was checked", key)
        return
    try:
        draft_vocabulary = base_vocabulary(load_tokenizer(str(draft_dir), trust_remote_code=config.trust_remote_code))
    except Exception as exc:  # noqa: BLE001 - advisory: an unreadable tokenizer must not stop the load
        logger.warning("%s: could not read the draft's tokenizer to compare it with the model's (%s: %s)", key,
                       type(exc).__name__, exc)
        return
    if len(draft_vocabulary) < draft_width / 2:
        logger.info("%s: the draft's tokenizer holds %d tokens for %d logits; not compared", key,
                    len(draft_vocabulary), draft_width)
        return
    problem = draft_vocabulary_problem(base_vocabulary(tokenizer), draft_vocabulary)
    if problem is not None:
        logger.warning("%s: the draft's tokenizer differs from the model's: %s. Output is unchanged, but its "
                       "proposals will rarely be kept and speculation will slow decoding down", key, problem)


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
    if draft is not None:
        warn_draft_tokenizer(config, tokenizer, Path(str(draft.info.extra["model_dir"])), draft.limits.vocab_size)
    if config.chat_template:  # option.chat_template / --chat-template replaces the model's own
        tokenizer.chat_template = load_chat_template(config.chat_template, config.origin("chat_template"))
    engine = Engine(
        backend,
        tokenizer,
        max_prefill_tokens=config.max_rolling_batch_prefill_tokens,
        generation_defaults=GenerationDefaults.from_model_dir(artifacts.model_dir),
        ngram_length=config.speculative_length if config.speculative_method == "ngram" else 0,
        chunked_prefill=config.enable_chunked_prefill,
        scheduling_policy=config.scheduling_policy,
        draft=draft,
        draft_length=config.speculative_length if draft is not None else 0,
    )
    if config.speculative_method == "ngram" and not engine.ngram_length:
        logger.warning("%s=ngram has no effect: the %s backend cannot verify proposed tokens (n-gram speculation "
                       "runs on the PyTorch backend)", config.origin("speculative_method"), backend.info.name)
    logger.info(
        "engine ready: backend=%s device=%s model_type=%s dtype=%s slots=%d n_positions=%d "
        "prefill_budget=%d chunked_prefill=%s order=%s in %.1fs",
        backend.info.name,
        backend.info.device,
        backend.info.model_type,
        backend.info.dtype,
        backend.limits.max_slots,
        backend.limits.n_positions,
        engine.scheduler.max_prefill_tokens,
        engine.scheduler.chunked,
        engine.scheduler.policy,
        time.monotonic() - started,
    )
    return engine
