"""LMI's Neuron smart defaults: ``n_positions``, ``tensor_parallel_degree`` and ``max_rolling_batch_size``
from the model's size and the NeuronCores present, for the keys the user left unset.

A port of djl-serving afece25d ``wlm/src/main/java/ai/djl/serving/wlm/NeuronSmartDefaultUtils.java``
(the model server's version, which LMI 0.30+ applies before its Python handler starts), with its
inputs from ``LmiUtils.HuggingFaceModelConfig`` (``LmiUtils.java:584-657``). The constants, the
parameter estimate (LMI's own formula, quirks included, so that the same model gets the same
shape as under LMI) and the search are LMI's:

* 16 GB per NeuronCore, batches of at most 32, a power of two;
* ``n_positions = min(max_position_embeddings, 4096)``; no smart defaults when that is not positive;
* the model takes ``bytes x parameters`` (1 byte with ``quantize``, else 2), plus 2 % per extra core;
  one sequence takes ``n_positions x hidden_size x layers x bytes x 0.95``;
* ``tensor_parallel_degree``: the smallest core count in {1, 2, 4, 8, all} (4 left out on 32 cores)
  that holds the model with 10 % headroom and serves as many sequences over the whole instance as
  one copy on every core would; ``max_rolling_batch_size``: what then fits.

Inside LMI 0.30+ containers the Java front end has already set these keys, so nothing here acts;
under ``djl-serve`` and the DJL releases before 0.30 this is what picks them. Pure: the caller
passes the core count and applies the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

BILLION = 1_000_000_000.0
MAX_ROLLING_BATCH = 32
MEMORY_PER_CORE_GB = 16.0  # Inferentia2 and Trainium1: 32 GB per device, two NeuronCores
MAX_N_POSITIONS = 4096


def _int(config: Mapping[str, Any], key: str) -> int:
    """A config field as Java's gson reads it into an ``int``: 0 when absent."""
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def default_n_positions(config: Mapping[str, Any]) -> int:
    """``getDefaultNPositions``: ``min(max_position_embeddings, 4096)``; 0 without the field."""
    return min(_int(config, "max_position_embeddings"), MAX_N_POSITIONS)


def model_parameters(config: Mapping[str, Any]) -> int:
    """LMI's parameter estimate (``getModelParameters``): the llama formula for llama and mistral,
    which multiplies attention heads by K/V heads where a head size belongs (so it overestimates
    models without grouped-query attention, as LMI does), else a GPT-2-like count."""
    hidden, layers, vocab = _int(config, "hidden_size"), _int(config, "num_hidden_layers"), _int(config, "vocab_size")
    if config.get("model_type") in ("llama", "mistral"):
        kv_heads = _int(config, "num_key_value_heads")
        head_dim = _int(config, "num_attention_heads") * kv_heads
        embeddings = vocab * hidden
        qkv = head_dim * hidden * kv_heads * 3
        mlp = hidden * _int(config, "intermediate_size") * 3
        return embeddings + layers * (qkv + hidden * hidden + mlp + 2 * hidden) + hidden + embeddings
    positions = _int(config, "max_position_embeddings")
    block = 4 * hidden * hidden + 8 * hidden * hidden + 4 * hidden
    return (vocab + positions) * hidden + block * layers + hidden * vocab


@dataclass(frozen=True)
class SmartDefaults:
    """The keys to set (None: left as they are) and one log line per key, as LMI logs them."""

    n_positions: Optional[int] = None
    tensor_parallel_degree: Optional[int] = None
    max_rolling_batch_size: Optional[int] = None
    reasons: tuple[str, ...] = ()

    def as_options(self) -> dict[str, int]:
        return {k: v for k, v in (("n_positions", self.n_positions),
                                  ("tensor_parallel_degree", self.tensor_parallel_degree),
                                  ("max_rolling_batch_size", self.max_rolling_batch_size)) if v is not None}


def _pow2(n: int) -> int:
    """``getMaxPowerOf2``: the largest power of two <= ``min(n, 32)`` (0 below 1)."""
    n = min(n, MAX_ROLLING_BATCH)
    return 1 << (n.bit_length() - 1) if n > 0 else 0


class _Sizes:
    def __init__(self, model_gb: float, sequence_gb: float) -> None:
        self.model_gb, self.sequence_gb = model_gb, sequence_gb

    def adjusted_model_gb(self, tp: int) -> float:
        return self.model_gb * (1.0 + (tp * 2 - 2) / 100.0)

    def concurrency(self, memory_gb: float, tp: int) -> int:
        fits = int((memory_gb - self.adjusted_model_gb(tp)) / self.sequence_gb)
        return min(_pow2(fits), MAX_ROLLING_BATCH)

    def concurrency_with_batch(self, memory_gb: float, tp: int, batch: int) -> int:
        fits = min(_pow2(int((memory_gb - self.adjusted_model_gb(tp)) / self.sequence_gb)), batch)
        return fits if fits == batch else 0


def _core_configs(cores: int, model_gb: float) -> list[int]:
    """``availableCoreConfigs``: 1, 2, 4, 8 (no 4 on 32 cores) and ``cores`` above 8, keeping those that
    hold the model with 10 % headroom."""
    configs = [c for c in (1, 2, 4, 8) if c != 4 or cores != 32] + ([cores] if cores > 8 else [])
    per_model = math.ceil(1.1 * model_gb / MEMORY_PER_CORE_GB)
    return [c for c in configs if per_model <= c]


def smart_defaults(config: Mapping[str, Any], *, cores: int, quantized: bool, n_positions: Optional[int],
                   tensor_parallel_degree: Optional[int], max_rolling_batch_size: Optional[int]) -> SmartDefaults:
    """LMI's choice for the keys given as None (``applySmartDefaults``), on ``cores`` NeuronCores."""
    chosen: dict[str, int] = {}
    reasons: list[str] = []
    if n_positions is None:
        n_positions = default_n_positions(config)
        if n_positions <= 0:
            return SmartDefaults(reasons=("no smart defaults: config.json has no max_position_embeddings",))
        chosen["n_positions"] = n_positions
        reasons.append(f"n_positions {n_positions}: min(max_position_embeddings, {MAX_N_POSITIONS})")
    param_bytes = 1 if quantized else 2
    sizes = _Sizes(param_bytes * model_parameters(config) / BILLION,
                   n_positions * _int(config, "hidden_size") * _int(config, "num_hidden_layers") * param_bytes
                   * 0.95 / 2**30)
    if sizes.model_gb <= 0 or sizes.sequence_gb <= 0 or cores < 1:
        reasons.append("no tensor_parallel_degree or max_rolling_batch_size: the model's size or the core count "
                       "is unknown")
        return SmartDefaults(chosen.get("n_positions"), reasons=tuple(reasons))
    tp = cores
    if tensor_parallel_degree is None:
        total = sizes.concurrency(tp * MEMORY_PER_CORE_GB, tp) if max_rolling_batch_size is None else \
            sizes.concurrency_with_batch(tp * MEMORY_PER_CORE_GB, tp, max_rolling_batch_size)
        for c in _core_configs(cores, sizes.model_gb):
            per_copy = sizes.concurrency(c * MEMORY_PER_CORE_GB, c) if max_rolling_batch_size is None else \
                sizes.concurrency_with_batch(c * MEMORY_PER_CORE_GB, c, max_rolling_batch_size)
            if per_copy * (cores // c) >= total and c <= tp:
                tp, total = c, per_copy * (cores // c)
        chosen["tensor_parallel_degree"] = tp
        reasons.append(f"tensor_parallel_degree {tp}: the fewest of {cores} NeuronCores that hold a "
                       f"~{sizes.model_gb:.1f} GB model and serve the most sequences per instance")
    else:
        tp = tensor_parallel_degree
    if max_rolling_batch_size is None:
        batch = sizes.concurrency(tp * MEMORY_PER_CORE_GB, tp)
        if batch > 0:
            chosen["max_rolling_batch_size"] = batch
            reasons.append(f"max_rolling_batch_size {batch}: sequences of {n_positions} positions that fit "
                           f"{tp} x {MEMORY_PER_CORE_GB:g} GB beside the model")
    return SmartDefaults(chosen.get("n_positions"), chosen.get("tensor_parallel_degree"),
                         chosen.get("max_rolling_batch_size"), tuple(reasons))
