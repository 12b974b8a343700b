"""Memory the PyTorch backend will take, computed before anything is allocated, and its budget.

The PyTorch backend preallocates every slot's K/V rows at full length when it
loads (``kv_cache.RowCache``), so the KV cache is a fixed, known size:

    KV bytes = slots x n_positions x layers x 2 (K and V) x KV heads x head dim x dtype bytes

and the weights are their parameter count (read from the safetensors headers,
no tensor is read) times the bytes of the dtype they are loaded in. Both use
the backend's own defaults (``model_defaults.resolve_dtype`` and
``resolve_n_positions``), so the plan describes what the load would allocate.
Where the native llama forward packs weights for oneDNN (CPU), a tied LM head is
packed as a copy of the embedding, and the plan adds it; where it packs half
weights widened to fp32 (a CPU oneDNN cannot run them on), the plan counts
every weight and bias but the embedding and the norms in fp32.

``check_budget`` compares the sum with ``option.memory_budget``, by default 90%
of the memory available now: host memory (``MemAvailable``, capped by a cgroup
v2/v1 limit minus its usage) for CPU, free device memory for CUDA. Activations
and the Python process itself are not counted; that is what the other 10% is
for. Too large a configuration fails here with a message naming the options to
change, instead of an OOM kill with no message.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from djl_python.backends.checkpoint_size import checkpoint_parameters
from djl_python.config import dtypes
from djl_python.config.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_FRACTION = 0.9
# safetensors header dtypes -> bytes (https://github.com/huggingface/safetensors, format docs).
_ST_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}
_GIB = 2**30


def gib(n: float) -> str:
    return f"{n / _GIB:.2f} GiB"


@dataclass(frozen=True)
class MemoryPlan:
    """What the backend will allocate: weights and the preallocated KV cache, in bytes."""

    slots: int
    n_positions: int
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    weights_bytes: int
    cache_rows: int = 0  # KV rows of the prefix cache, beside the slots' rows

    @property
    def row_bytes(self) -> int:
        """One KV row: every position of every layer's K and V."""
        return self.n_positions * self.layers * 2 * self.kv_heads * self.head_dim * dtypes.BY_NAME[self.dtype].itemsize

    @property
    def kv_cache_bytes(self) -> int:
        return (self.slots + self.cache_rows) * self.row_bytes

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes

    def describe(self) -> str:
        return (
            f"weights {gib(self.weights_bytes)} + KV cache {gib(self.kv_cache_bytes)} "
            f"({self.slots} slots{f' + {self.cache_rows} prefix-cache rows' if self.cache_rows else ''} x {self.n_positions} positions x {self.layers} layers x 2 x {self.kv_heads} KV heads"
            f" x {self.head_dim} x {dtypes.BY_NAME[self.dtype].itemsize} bytes {self.dtype}) = {gib(self.total_bytes)}"
        )


def kv_geometry(config: Any) -> tuple[int, int, int]:
    """``(layers, kv_heads, head_dim)`` of a Hugging Face config: GQA (``num_key_value_heads``),
    MQA (``multi_query``: one head, gpt_bigcode and falcon) or one K/V head per attention head."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    kv_heads = getattr(text, "num_key_value_heads", None) or getattr(text, "num_kv_heads", None)
    if not kv_heads:
        kv_heads = 1 if getattr(text, "multi_query", False) else heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return int(text.num_hidden_layers), int(kv_heads), int(head_dim)


def weights_bytes(model_dir: Path, dtype: str, stored_dtype: str | None) -> int:
    """Bytes the weights take once loaded in ``dtype``.

    From the safetensors headers when present; otherwise the checkpoint files' size
    rescaled from the stored dtype (``stored_dtype``, fp32 when unknown)."""
    params = checkpoint_parameters(model_dir)
    if params is not None:
        return params * dtypes.BY_NAME[dtype].itemsize
    files = [p for pattern in ("*.bin", "*.pt") for p in model_dir.glob(pattern)]
    stored = dtypes.BY_NAME[stored_dtype or "fp32"].itemsize
    return sum(p.stat().st_size for p in files) * dtypes.BY_NAME[dtype].itemsize // stored


def plan_memory(model_dir: str | Path, *, max_slots: int, n_positions: int | None, dtype: str | None,
                device: str, trust_remote_code: bool = False) -> MemoryPlan:
    """The plan for loading ``model_dir`` as the PyTorch backend would (same defaults)."""
    import torch
    from transformers import AutoConfig

    from djl_python.backends import model_defaults as defaults
    from djl_python.backends.pytorch.native.architectures import native_support, unwidened_parameters
    from djl_python.backends.pytorch.native.linear import packed_dtype

    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    torch_dtype = defaults.resolve_dtype(dtype, torch.device(device_type))
    name = defaults.dtype_name(torch_dtype)
    layers, kv_heads, head_dim = kv_geometry(config)
    stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "").replace("torch.", "")
    stored_short = dtypes.canonical(stored)
    weights = weights_bytes(Path(model_dir), name, stored_short)
    packed = packed_dtype(device_type, torch_dtype) if native_support(config) is None else None
    if packed is not None:
        text = config.get_text_config()
        embedding = text.vocab_size * text.hidden_size
        if packed != torch_dtype:
            # Widened (.native.linear): every weight and bias but the embedding, a learned
            # position table and the norms is held in fp32, an untied head included.
            unwidened = unwidened_parameters(config)
            weights = weights_bytes(Path(model_dir), "fp32", stored_short) \
                - unwidened * (torch.float32.itemsize - torch_dtype.itemsize)
        # The CPU kernels' panel layout (.native.panel_linear) pads a weight to a multiple of 32
        # output rows: at most 31 rows a weight, left to the plan's margin.
        if getattr(text, "tie_word_embeddings", False):
            # The native forward packs a tied LM head as its own copy (the embedding stays).
            weights += embedding * packed.itemsize
    return MemoryPlan(
        slots=max_slots,
        n_positions=defaults.resolve_n_positions(config, n_positions),
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        dtype=name,
        weights_bytes=weights,
    )


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def host_available_bytes(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """``MemAvailable``, capped by the cgroup's limit minus its usage (v2, else v1); None if unknown."""
    available: int | None = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = _read_int(cgroup / limit_file), _read_int(cgroup / usage_file)
        if limit is not None and usage is not None and limit < 2**60:  # v1 writes ~2^63 for no limit
            room = max(limit - usage, 0)
            available = room if available is None else min(available, room)
            break
    return available


def available_memory(device: str) -> tuple[int | None, str]:
    """Memory available to the model now on ``device``, and where the figure comes from."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory on {device}"
    return host_available_bytes(), "available host memory (MemAvailable within the cgroup limit)"


def memory_budget(config: HandlerConfig, device: str) -> tuple[int | None, str]:
    """The budget in bytes (``config.memory_budget``, else ``DEFAULT_BUDGET_FRACTION`` of
    ``available_memory(device)``; None when unknown) and where it comes from."""
    if config.memory_budget is not None:
        return config.memory_budget, f"{config.origin('memory_budget')}={config.memory_budget}"
    available, where = available_memory(device)
    if available is None:
        return None, f"{where} unknown"
    return (int(available * DEFAULT_BUDGET_FRACTION),
            f"{DEFAULT_BUDGET_FRACTION:.0%} of {gib(available)} {where}; set option.memory_budget to change it")


def with_prefix_cache(plan: MemoryPlan, config: HandlerConfig, device: str) -> MemoryPlan:
    """``plan`` with its prefix-cache rows: none when ``enable_prefix_caching`` is off;
    ``prefix_cache_rows`` when set (``check_budget`` then holds it to
    the budget); else as many as the budget leaves room for beside the slots, up to one per slot."""
    if not config.enable_prefix_caching:
        return plan
    if config.prefix_cache_rows is not None:
        return dataclasses.replace(plan, cache_rows=config.prefix_cache_rows)
    budget, _ = memory_budget(config, device)
    room = plan.slots if budget is None else max(budget - plan.total_bytes, 0) // plan.row_bytes
    return dataclasses.replace(plan, cache_rows=int(min(plan.slots, room)))


def check_budget(plan: MemoryPlan, config: HandlerConfig, device: str) -> None:
    """Log ``plan``; raise ``ConfigError`` naming the options to change when it exceeds the budget
    (:func:`memory_budget`)."""
    budget, why = memory_budget(config, device)
    if budget is None:
        logger.info("memory plan: %s (not checked: %s)", plan.describe(), why)
        return
    logger.info("memory plan: %s; budget %s (%s)", plan.describe(), gib(budget), why)
    if plan.total_bytes <= budget:
        return
    slots_key = config.origin(config.slots_key)
    n_pos_key, dtype_key = config.origin("n_positions"), config.origin("dtype")
    budget_key = config.origin("memory_budget")
    advice = f"lower {slots_key} (now {plan.slots}) or {n_pos_key} (now {plan.n_positions})"
    if plan.cache_rows:
        advice += f", lower {config.origin('prefix_cache_rows')} (now {plan.cache_rows})"
    if plan.dtype == "fp32":
        advice += f", set {dtype_key}=bf16 (halves both)"
    message = (f"the model needs {gib(plan.total_bytes)} ({plan.describe()}) but the memory budget is {gib(budget)}"
               f" ({why}); {advice}, or raise {budget_key}")
    raise ConfigError([ConfigProblem(", ".join((slots_key, n_pos_key, budget_key)), None, message,
                                     message_names_key=True)])
