"""``transformers_neuronx.config`` as the emulated release has it (see ``_versions.py``).

* ``NeuronConfig``: ``**kargs`` that silently drops unknown keys (0.8, 0.9:
  90c7199/8b01968 have no ``assert len(kargs) == 0``), ``**kargs`` that asserts
  on them (0.10), or keyword-only (0.11+). Under continuous batching
  ``lhs_aligned`` is forced on from 0.10-late, and ``vectorize_last_token_id``
  exists from 0.10-late only (0623de2).
* ``ContinuousBatchingConfig(batch_size_for_shared_caches)`` (0.9-0.11) or
  ``(**kwargs)`` with the ``max_num_seqs`` alias (0.13); absent in 0.8.
"""

from __future__ import annotations

from typing import Any

from transformers_neuronx._double import RELEASE


class QuantizationConfig:
    def __init__(self, quant_dtype="s8", dequant_dtype="f16", quantize_method="vector_dynamic",
                 quantize_attn=True, no_quantize_list=()):
        self.quant_dtype, self.dequant_dtype = quant_dtype, dequant_dtype
        self.quantize_method, self.quantize_attn = quantize_method, quantize_attn
        self.no_quantize_list = list(no_quantize_list)


class _PositionalCBConfig:
    def __init__(self, batch_size_for_shared_caches):
        self.batch_size_for_shared_caches = batch_size_for_shared_caches


class _KwargsCBConfig:
    def __init__(self, **kwargs: Any):
        self.max_num_seqs = kwargs.pop("max_num_seqs", None) or kwargs.pop("batch_size_for_shared_caches")
        self.max_model_len = kwargs.pop("max_model_len", None)
        self.optimized_paged_attention = kwargs.pop("optimized_paged_attention", False)
        self.enable_chunked_prefill = kwargs.pop("enable_chunked_prefill", False)
        assert len(kwargs) == 0, f"unexpected key word arguments: {kwargs.keys()}"

    @property
    def batch_size_for_shared_caches(self) -> int:
        return self.max_num_seqs


class GenerationConfig:
    def __init__(self, *, max_length=None, do_sample=False, top_k=50, eos_token_id=None, temperature=1.0, **kw):
        self.max_length, self.do_sample, self.top_k = max_length, do_sample, top_k
        self.eos_token_id, self.temperature, self.extra = eos_token_id, temperature, kw


_DEFAULTS = {"quant": None, "continuous_batching": None, "attention_layout": "HSB", "collectives_layout": "HSB",
             "cache_layout": "SBH", "group_query_attention": None, "on_device_embedding": False, "fuse_qkv": False,
             "cast_logits_dtype": "float32", "all_reduce_dtype": None, "padding_side": "left", "qkv_tiling": False,
             "shard_over_sequence": False, "compilation_worker_count": None}


class NeuronConfig:
    """One class for all forms; the emulated release decides which keys it takes and how it fails."""

    def __init__(self, *args: Any, **kwargs: Any):
        if args:  # every form is keyword-only in practice (kargs or *,)
            raise TypeError("NeuronConfig takes keyword arguments only")
        form, known = RELEASE.neuron_config_form, RELEASE.neuron_config_keys
        unknown = {k: v for k, v in kwargs.items() if k not in known}
        if unknown and form == "kargs-strict":
            raise AssertionError(f"unexpected arguments: {unknown}")
        if unknown and form == "keyword-only":
            raise AssertionError(f"Unexpected NeuronConfig keyword arguments: {unknown}")
        accepted = {k: v for k, v in kwargs.items() if k in known}  # kargs-lenient: the rest is dropped
        self.recorded = dict(accepted)
        for key, value in _DEFAULTS.items():
            setattr(self, key, accepted.get(key, value))
        if "cast_logits_dtype" in accepted:
            assert self.cast_logits_dtype in ("float32", "float16", "bfloat16"), self.cast_logits_dtype
        if self.qkv_tiling:  # c8d6bdc config.py:204-208, 1ade6d7 config.py:291-295
            assert self.fuse_qkv, "QKV weight tiling is currently only supported when fuse_qkv is set"
        if self.shard_over_sequence and RELEASE.label == "0.13":  # 1ade6d7 config.py:353-356
            assert str(getattr(self.cache_layout, "value", self.cache_layout)) == "SBH", \
                "flash decoding (shard_over_sequence) needs the SBH cache layout"
        if self.group_query_attention is not None:
            from transformers_neuronx.constants import GQA

            self.group_query_attention = GQA(self.group_query_attention)
        lhs = bool(accepted.get("use_2d_cache_ids") or accepted.get("lhs_aligned")
                   or accepted.get("padding_side") == "right")
        self.lhs_aligned = bool(lhs or self.continuous_batching)
        if self.continuous_batching:
            self.padding_side = "right"

    def __getattr__(self, name: str) -> Any:
        # vectorize_last_token_id / use_2d_cache_ids are properties from 0623de2 on; before,
        # 8b01968/7a30b42 store use_2d_cache_ids as a plain attribute and have no vectorize_last_token_id.
        if name == "vectorize_last_token_id" and RELEASE.vectorize_last_token_id:
            return self.lhs_aligned
        if name == "use_2d_cache_ids" and RELEASE.continuous_batching is not None:
            return self.lhs_aligned
        if name == "use_1d_query" and RELEASE.label == "0.13":
            # 1ade6d7 config.py:369-371: BSH with right padding (forced by continuous batching)
            # prefills concatenated prompts (base.py:513-537).
            return str(self.cache_layout).upper().endswith("BSH") and self.padding_side == "right"
        raise AttributeError(name)


ContinuousBatchingConfig = _KwargsCBConfig if RELEASE.continuous_batching == "kwargs" else _PositionalCBConfig
if RELEASE.continuous_batching is None:
    del ContinuousBatchingConfig


if RELEASE.neuron_config_form == "keyword-only":
    # 0.11+ declare every key in the signature (c8d6bdc/1ade6d7 config.py), so callers can introspect it.
    import inspect

    NeuronConfig.__init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None)
           for k in sorted(RELEASE.neuron_config_keys - {"use_2d_cache_ids", "lhs_aligned"})]
        + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
