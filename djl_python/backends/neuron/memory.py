"""What a Neuron load plan takes on its NeuronCores, checked against their memory before anything loads.

Each NeuronCore of Inferentia2 and Trainium1 has 16 GiB of device memory (32 GiB per device, two
cores). transformers-neuronx shards the weights over ``tp_degree`` cores and the KV cache by
K/V head, replicating heads when there are fewer than cores (grouped-query attention
``shard-over-heads``); each slot owns a full ``n_positions`` row. So, per core:

* weights: parameters (from the safetensors headers, else counted from config.json) x bytes per weight
  (``amp``; 1 with ``quantize=static_int8``) / ``tp_degree``;
* KV cache: 2 x layers x slots x ``n_positions`` x K/V heads held x head size x ``amp`` bytes /
  ``tp_degree``, the heads held as transformers-neuronx pads and replicates them per
  ``group_query_attention`` (:func:`kv_heads_held`).

Compiled graphs, scratch buffers and the runtime take more, so this is a lower bound: a plan over
the budget cannot load, one under it may still not. The budget is ``option.memory_budget`` (bytes
over the model's cores) when set, else 16 GiB per core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from djl_python.backends.checkpoint_size import checkpoint_parameters
from djl_python.config import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from djl_python.backends.neuron.plan import NeuronLoadPlan
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)
GIB = 2**30
CORE_MEMORY = 16 * GIB
AMP_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


@dataclass(frozen=True)
class NeuronMemoryPlan:
    tp_degree: int
    weights_bytes: int  # over all cores
    kv_bytes: int  # over all cores

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes

    def describe(self) -> str:
        return (f"weights {self.weights_bytes / GIB:.2f} GiB + KV cache {self.kv_bytes / GIB:.2f} GiB over "
                f"{self.tp_degree} NeuronCore(s), {self.total_bytes / self.tp_degree / GIB:.2f} GiB per core")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def kv_heads_held(n_head: int, n_kv: int, tp: int, mode: Optional[str]) -> int:
    """K/V heads the cache holds over all cores (transformers-neuronx 1ade6d7 ``utils.get_qkv_padding``
    ``utils.py:355-395``, ``decoder.py:165-176, 1485-1495, 1758-1791``): none replicated when sharded over
    the batch; sharded over heads when ``n_kv`` divides over the cores, else replicated, fully (to the
    query heads) or only up to the cores; then padded to a multiple of the cores."""
    if mode == "shard-over-batch":
        return n_kv
    if mode in (None, "shard-over-heads") and n_kv % tp != 0:
        mode = "replicated-heads"  # decoder.py:170-176
    held = n_kv
    if mode == "replicated-heads" and n_head != n_kv:
        padded = _round_up(n_head, tp)
        ratio = n_head // n_kv
        if n_kv < tp and tp % n_kv == 0 and (n_head % tp == 0 or (padded > n_head and (padded - n_head) % n_kv == 0)):
            ratio = tp // n_kv
        elif padded / tp == n_head / n_kv:
            ratio = 1
        held = max(n_kv * ratio, tp)
    return _round_up(held, tp)


def config_parameters(hf_config: Mapping[str, Any]) -> int:
    """Parameters of a decoder from its config.json: embeddings and LM head, attention with its real head
    size and K/V heads, a gated MLP when ``intermediate_size`` is given (else GPT-2's 4x), norms."""
    hidden = int(hf_config.get("hidden_size") or hf_config.get("n_embd") or 0)
    layers = int(hf_config.get("num_hidden_layers") or hf_config.get("n_layer") or 0)
    heads = int(hf_config.get("num_attention_heads") or hf_config.get("n_head") or 1)
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    head_dim = int(hf_config.get("head_dim") or hidden // heads)
    inter = hf_config.get("intermediate_size")
    mlp = 3 * hidden * int(inter) if inter else 8 * hidden * hidden
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    return 2 * int(hf_config.get("vocab_size") or 0) * hidden + layers * (attention + mlp + 2 * hidden) + hidden


def plan_neuron_memory(hf_config: Mapping[str, Any], checkpoint_dir: Optional[Path], *, tp_degree: int, slots: int,
                       n_positions: int, amp: str, quantized: bool,
                       group_query_attention: Optional[str] = None) -> NeuronMemoryPlan:
    """The plan's device memory (module docstring)."""
    params = checkpoint_parameters(checkpoint_dir) if checkpoint_dir is not None else None
    if params is None:
        params = config_parameters(hf_config)
    element = AMP_BYTES.get(amp, 2)
    layers = int(hf_config.get("num_hidden_layers") or hf_config.get("n_layer") or 0)
    heads = int(hf_config.get("num_attention_heads") or hf_config.get("n_head") or 1)
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    hidden = int(hf_config.get("hidden_size") or hf_config.get("n_embd") or 0)
    head_dim = int(hf_config.get("head_dim") or hidden // heads)
    held = kv_heads_held(heads, kv_heads, tp_degree, group_query_attention)
    kv = 2 * layers * slots * n_positions * held * head_dim * element
    return NeuronMemoryPlan(tp_degree, params * (1 if quantized else element), kv)


def check_neuron_memory(plan: NeuronLoadPlan, config: HandlerConfig, hf_config: Mapping[str, Any],
                        checkpoint_dir: Optional[Path], alongside: Optional[NeuronMemoryPlan] = None) -> NeuronMemoryPlan:
    """Log the memory ``plan`` takes; ``ConfigError`` naming the options to change when it exceeds the budget.
    ``alongside``: a model loaded on the same cores (a speculative target, for its draft), counted too."""
    tp = int(plan.model_kwargs.get("tp_degree") or 1)
    memory = plan_neuron_memory(hf_config, checkpoint_dir, tp_degree=tp, slots=plan.batch_size,
                                n_positions=plan.n_positions, amp=str(plan.model_kwargs.get("amp")),
                                quantized="quant" in plan.neuron_options,
                                group_query_attention=plan.neuron_options.get("group_query_attention"))
    if alongside is not None:
        tp = max(tp, alongside.tp_degree)
        memory = NeuronMemoryPlan(tp, memory.weights_bytes + alongside.weights_bytes,
                                  memory.kv_bytes + alongside.kv_bytes)
    if config.memory_budget is not None:
        budget, why = config.memory_budget, f"{config.origin('memory_budget')}={config.memory_budget}"
    else:
        budget, why = CORE_MEMORY * tp, f"16 GiB per NeuronCore x {tp}"
    logger.info("Neuron memory plan: %s; budget %.2f GiB (%s)", memory.describe(), budget / GIB, why)
    if memory.total_bytes > budget:
        keys = [config.origin(config.slots_key), config.origin("n_positions"),
                config.origin("tensor_parallel_degree")]
        message = (f"the model needs at least {memory.total_bytes / GIB:.2f} GiB on its NeuronCores "
                   f"({memory.describe()}) but has {budget / GIB:.2f} GiB ({why}); lower {keys[0]} (now "
                   f"{plan.batch_size}) or {keys[1]} (now {plan.n_positions}), or raise {keys[2]} (now {tp})")
        raise ConfigError([ConfigProblem(", ".join(keys), None, message, message_names_key=True)])
    return memory
