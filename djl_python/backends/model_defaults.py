"""Load-time defaults the PyTorch backend derives from a Hugging Face config.

Pure functions of the config and the caller's overrides; each raises ``ValueError`` naming
the offending option, so a bad ``serving.properties`` fails at load with a clear message.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from djl_python.config.dtypes import DTYPES

DEFAULT_MAX_POSITIONS = 2048  # cap for the default n_positions, and bloom's (alibi has no table)
_MIN_BUCKET = 128
# The one dtype table (config/dtypes.py), as torch dtypes.
_DTYPES: dict[str, torch.dtype] = {d.name: getattr(torch, d.long) for d in DTYPES}
# Fields that hold a model's position limit, by architecture family (first one present wins).
_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``fp32``/``fp16``/``bf16``; ``None`` means fp32 on CPU and fp16 on an accelerator."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or None, got {dtype!r}") from None


# CPU flags (``/proc/cpuinfo``) of instructions that compute bf16 products in hardware. Without
# one of them oneDNN converts bf16 to fp32 around every op and bf16 runs slower than fp32
# (figures in docs/performance.md).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """Which of :data:`BF16_CPU_FLAGS` this CPU reports (empty where none, or not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in _DTYPES.items() if value == dtype)


def model_position_limit(config: object) -> int | None:
    """The most positions the model's weights cover; ``None`` when unbounded (alibi)."""
    for name in _POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_n_positions(config: object, n_positions: int | None) -> int:
    """Default: ``min(model limit, 2048)``. Never beyond the model limit, nor beyond a sliding
    window (slot masks are plain causal: a longer sequence would need window masking)."""
    limit = model_position_limit(config)
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window > 0:
        limit = window if limit is None else min(limit, window)
    if n_positions is None:
        return min(limit or DEFAULT_MAX_POSITIONS, DEFAULT_MAX_POSITIONS)
    if n_positions < 2:
        raise ValueError(f"n_positions must be >= 2, got {n_positions}")
    if limit is not None and n_positions > limit:
        raise ValueError(
            f"n_positions {n_positions} exceeds what the model supports ({limit}: position embeddings"
            " or sliding window)"
        )
    return n_positions


def resolve_buckets(n_positions: int, buckets: Sequence[int] | None) -> tuple[int, ...]:
    """Default: 128, 256, ... (powers of two below ``n_positions``), then ``n_positions``."""
    if buckets is None:
        result, size = [], _MIN_BUCKET
        while size < n_positions:
            result.append(size)
            size *= 2
        return (*result, n_positions)
    result = tuple(sorted(set(int(b) for b in buckets)))
    if not result or result[0] < 1:
        raise ValueError(f"prefill_buckets must be positive integers, got {list(buckets)}")
    if result[-1] > n_positions:
        raise ValueError(f"prefill_buckets {list(result)} exceed n_positions {n_positions}")
    return result


def eos_token_ids(*configs: object) -> tuple[int, ...]:
    """Union of ``eos_token_id`` (an int or a list) over the model and generation configs."""
    ids: set[int] = set()
    for config in configs:
        value = getattr(config, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return tuple(sorted(ids))
