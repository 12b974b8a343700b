"""What to suggest for an unknown configuration key.

Two kinds of mistakes reach us: another engine's name for one of our options
(``max_model_len`` is vLLM's ``n_positions``) and typos
(``tensor_paralel_degree``). The first is a fixed table; the second a close
spelling match. The match is deliberately strict: a loose one sent
``option.max_model_len`` to ``model_loader``, which is worse than no hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Other engines' option names -> ours, with whose name it is. Sources: vLLM's engine
# arguments (vllm/engine/arg_utils.py) and TGI's launcher flags (launcher/src/main.rs).
FOREIGN_KEYS: dict[str, tuple[str, str]] = {
    "max_model_len": ("n_positions", "vLLM"),
    "max_num_seqs": ("max_rolling_batch_size", "vLLM"),
    "tensor_parallel_size": ("tensor_parallel_degree", "vLLM"),
    "gpu_memory_utilization": ("memory_budget", "vLLM"),
    "max_num_batched_tokens": ("max_rolling_batch_prefill_tokens", "vLLM"),
    "quantization": ("quantize", "vLLM"),
    "model": ("model_id", "vLLM"),
    "max_total_tokens": ("n_positions", "TGI"),
    "max_concurrent_requests": ("max_waiting_requests", "TGI"),
    "max_batch_size": ("max_rolling_batch_size", "TGI"),
    "max_batch_prefill_tokens": ("max_rolling_batch_prefill_tokens", "TGI"),
    "num_shard": ("tensor_parallel_degree", "TGI"),
}
# Similarity (difflib ratio) a typo must reach; 0.6 matched unrelated keys sharing "model_".
TYPO_CUTOFF = 0.8


def suggest_key(key: str, known: Iterable[str]) -> str | None:
    """The option the user probably meant by ``key`` (a field name), or None."""
    known = sorted(known)
    foreign = FOREIGN_KEYS.get(key.lower())
    if foreign is not None and foreign[0] in known:
        return foreign[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=TYPO_CUTOFF)
    return close[0] if close else None


def suggestion_hint(key: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)``, naming the other engine for a foreign key; empty when nothing fits."""
    meant = suggest_key(key, known)
    if meant is None:
        return ""
    foreign = FOREIGN_KEYS.get(key.lower())
    if foreign is not None and foreign[0] == meant:
        return f" ({key} is {foreign[1]}'s name; here it is {meant})"
    return f" (did you mean {meant}?)"
