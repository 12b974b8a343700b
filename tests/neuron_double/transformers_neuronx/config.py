"""Test double of ``transformers_neuronx.config``: the documented constructors, recording their arguments.

``NeuronConfig`` is the 0.11+ keyword-only form; ``LegacyNeuronConfig`` is the
<= 0.10 ``**kargs`` form that rejects keys its release did not know, as the
real ones do (with an ``AssertionError``).
"""

from __future__ import annotations

from typing import Any

from transformers_neuronx.constants import GQA, Layout

LEGACY_KEYS: dict[tuple[int, int], set[str]] = {
    (0, 8): {"all_reduce_dtype", "cast_logits_dtype", "fuse_qkv", "quant", "sparse_attn"},
}
LEGACY_KEYS[(0, 9)] = LEGACY_KEYS[(0, 8)] | {
    "attention_layout", "collectives_layout", "continuous_batching", "group_query_attention",
    "on_device_embedding", "use_2d_cache_ids",
}
LEGACY_KEYS[(0, 10)] = LEGACY_KEYS[(0, 9)] | {
    "cache_layout", "log_softmax_scores", "on_device_generation", "lhs_aligned",
}


class QuantizationConfig:
    def __init__(self, quant_dtype="s8", dequant_dtype="f16", quantize_method="vector_dynamic",
                 quantize_attn=True, no_quantize_list=()):
        self.quant_dtype, self.dequant_dtype = quant_dtype, dequant_dtype
        self.quantize_method, self.quantize_attn = quantize_method, quantize_attn
        self.no_quantize_list = list(no_quantize_list)


class ContinuousBatchingConfig:
    def __init__(self, **kwargs: Any):
        self.max_num_seqs = kwargs.pop("max_num_seqs", None) or kwargs.pop("batch_size_for_shared_caches")
        self.max_model_len = kwargs.pop("max_model_len", None)
        self.optimized_paged_attention = kwargs.pop("optimized_paged_attention", False)
        self.enable_chunked_prefill = kwargs.pop("enable_chunked_prefill", False)
        assert not kwargs, f"unexpected key word arguments: {kwargs.keys()}"

    @property
    def batch_size_for_shared_caches(self) -> int:
        return self.max_num_seqs


class GenerationConfig:
    def __init__(self, *, max_length=None, do_sample=False, top_k=50, eos_token_id=None, temperature=1.0, **kw):
        self.max_length, self.do_sample, self.top_k = max_length, do_sample, top_k
        self.eos_token_id, self.temperature, self.extra = eos_token_id, temperature, kw


class NeuronConfig:
    def __init__(self, *, sparse_attn=None, quant: QuantizationConfig | None = None, kv_cache_quant=None,
                 continuous_batching: ContinuousBatchingConfig | None = None, attention_layout=Layout.HSB,
                 collectives_layout=Layout.HSB, cache_layout=Layout.SBH, padding_side: str = "left",
                 group_query_attention: GQA | None = None, sequence_parallel_norm: bool = False,
                 on_device_embedding: bool = False, on_device_generation: GenerationConfig | None = None,
                 all_reduce_dtype: str | None = None, cast_logits_dtype: str = "float32", fuse_qkv: bool = False,
                 qkv_tiling: bool = False, weight_tiling: bool = False, log_softmax_scores: bool = False,
                 shard_over_sequence: bool = False, output_all_logits: bool = False, fuse_mlp: bool = False,
                 compilation_worker_count: int | None = None, **kwargs: Any):
        assert cast_logits_dtype in ("float32", "float16", "bfloat16"), cast_logits_dtype
        assert padding_side in ("left", "right"), padding_side
        assert len(kwargs) == 0, f"Unexpected NeuronConfig keyword arguments: {kwargs}"
        self.recorded = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        self.quant, self.continuous_batching, self.on_device_embedding = quant, continuous_batching, on_device_embedding
        self.cache_layout, self.attention_layout, self.fuse_qkv = cache_layout, attention_layout, fuse_qkv
        self.group_query_attention = GQA(group_query_attention) if group_query_attention else None
        self.padding_side = "right" if continuous_batching else padding_side


class LegacyNeuronConfig:
    """<= 0.10: ``**kargs``, unknown keys rejected; the accepted set depends on the configured version."""

    version: tuple[int, int] = (0, 10)

    def __init__(self, **kargs: Any):
        self.recorded = dict(kargs)
        unknown = set(kargs) - LEGACY_KEYS[type(self).version]
        assert not unknown, f"unexpected arguments: {unknown}"
        self.quant = kargs.get("quant")
        self.continuous_batching = kargs.get("continuous_batching")
        self.on_device_embedding = kargs.get("on_device_embedding", False)
        self.padding_side = "right" if self.continuous_batching else "left"
