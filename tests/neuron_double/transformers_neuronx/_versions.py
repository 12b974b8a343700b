"""The double's own table of transformers-neuronx (TNX) releases, read from the real source.

Written from aws-neuron/transformers-neuronx at these commits (``git show REV:path``),
never from the product's ``djl_python/backends/neuron/versions.py``:

=============  =========  ==================================================================
label          commit     what this double takes from it
=============  =========  ==================================================================
``0.8``        90c7199    ``__init__.py`` exports only ``__version__``; ``config.NeuronConfig``
                          (``**kargs``, unknown keys silently dropped); no continuous batching,
                          no ``GQA``; ``module.PretrainedModel.from_pretrained`` reads only
                          ``pytorch_model.bin`` (file or split directory).
``0.9``        8b01968    top-level ``NeuronConfig``/``QuantizationConfig``/``ContinuousBatchingConfig``
                          /``GQA``; ``NeuronConfig(**kargs)`` still drops unknown keys;
                          ``module.py`` reads ``model.safetensors`` / ``pytorch_model.bin`` (file or
                          dir) only; ``_sanity_check`` under continuous batching: single
                          ``context_length_estimate`` == single ``n_positions``;
                          ``base._prepare_for_continuous_batching`` pads prefill ``cache_ids`` to
                          ``context_buckets[-1]``; ``_prepare_for_par_ctx_rhs_padding`` pads
                          ``input_ids`` but never ``cache_ids`` and returns a scalar
                          ``last_token_id``.
``0.10-early`` 7a30b42    adds ``NeuronAutoModelForCausalLM`` and the class re-exports;
                          ``NeuronConfig`` asserts on unknown keys (adds ``cache_layout``...);
                          same prefill padding / scalar last token / sanity check as 0.9, plus
                          "BSH cache layout can only be configured with continuous batching".
``0.10-late``  0623de2    ``NeuronConfig.vectorize_last_token_id`` (= ``lhs_aligned``, forced on
                          by continuous batching): per-row last token; prefill ``cache_ids`` padded
                          to the bucket that fits; static ``_pad_cache_ids`` pads explicit
                          ``cache_ids``; sanity check: one ``n_positions`` bucket, BSH cache
                          layout needs one context bucket; sharded checkpoints readable (since
                          7a30b42).
``0.11``       c8d6bdc    keyword-only ``NeuronConfig`` (``padding_side``...), ``Layout`` enum,
                          ``GenerationConfig`` top level; ``n_positions`` may be several buckets
                          unless BSH. (Its ``version.py`` still says ``0.10.x``; the 0.11 wheel
                          reports ``0.11.*``.)
``0.13``       1ade6d7    ``ContinuousBatchingConfig(**kwargs)`` (``max_num_seqs`` alias);
                          presharded checkpoints (``save(dir, sharded_weights=True)`` needs
                          ``on_device_embedding``; ``config.is_presharded_checkpoint``);
                          sanity check ``max(context_length_estimate) <= max(n_positions)``.
=============  =========  ==================================================================

In every version a continuous-batching decode is padded to the full batch with
token 0 at cache position 0 for each unlisted slot (``base._prepare_for_continuous_batching``),
GPT-J's mask is causal only (``gptj/hlo.py``: ``decoder_attention_mask_legacy(cache_offset)``),
and ``NeuronAutoModelForCausalLM`` maps ``gpt2`` to ``GPT2ForSamplingWithContextBroadcasting``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "TNX_DOUBLE_VERSION"
DEFAULT = "0.13"

_KEYS_08 = frozenset({"all_reduce_dtype", "sparse_attn", "quant", "cast_logits_dtype", "fuse_qkv"})
_KEYS_09 = _KEYS_08 | {"continuous_batching", "use_2d_cache_ids", "attention_layout", "collectives_layout",
                       "group_query_attention", "on_device_embedding"}
_KEYS_010E = _KEYS_09 | {"cache_layout", "log_softmax_scores", "on_device_generation"}
_KEYS_010L = _KEYS_010E | {"lhs_aligned"}
# c8d6bdc config.py NeuronConfig.__init__ keyword-only parameters (+ the deprecated kwargs it pops).
_KEYS_011 = frozenset({"sparse_attn", "quant", "continuous_batching", "attention_layout", "collectives_layout",
                       "cache_layout", "padding_side", "group_query_attention", "on_device_embedding",
                       "on_device_generation", "all_reduce_dtype", "cast_logits_dtype", "fuse_qkv", "qkv_tiling",
                       "weight_tiling", "log_softmax_scores", "shard_over_sequence", "output_all_logits",
                       "attn_output_transposed", "use_2d_cache_ids", "lhs_aligned"})
# 1ade6d7 adds these.
_KEYS_013 = _KEYS_011 | {"kv_cache_quant", "sequence_parallel_norm", "sequence_parallel_norm_threshold",
                         "bf16_rms_norm", "mlp_in_weight_tiling_permute_order", "mlp_out_weight_tiling_permute_order",
                         "fused_rmsnorm_qkv", "fused_rmsnorm_mlp", "mlp_out_weight_transpose", "fuse_mlp",
                         "is_eagle_target", "is_eagle_draft", "has_pre_attention_norm", "compilation_worker_count",
                         "duplicate_q_weight_sos"}


@dataclass(frozen=True)
class Release:
    label: str
    commit: str
    version: str  # what the installed wheel reports as __version__
    neuron_config_keys: frozenset[str]
    neuron_config_form: str  # "kargs-lenient" | "kargs-strict" | "keyword-only"
    top_level_classes: bool  # model classes + NeuronAutoModelForCausalLM re-exported at top level
    top_level_configs: bool  # NeuronConfig & co. at top level
    gqa: bool
    layout_enum: bool
    continuous_batching: str | None  # None | "positional" (batch_size_for_shared_caches) | "kwargs"
    sanity: str  # see module._sanity_check
    cb_prefill_cache_pad: str  # "largest" | "fit"
    vectorize_last_token_id: bool
    static_pads_cache_ids: bool
    checkpoint_formats: frozenset[str]  # "bin", "bin-dir", "safetensors", "sharded"
    presharded: bool
    models: frozenset[str]  # packages present
    # base.context: the leftover loop is "while current < context_length - 1" (7a30b42, 0623de2), so a static
    # prompt exactly one token longer than the largest bucket never runs its last token; 8b01968 loops
    # "for i in range(current, context_length)" and c8d6bdc/1ade6d7 "while current < context_length".
    leftover_skips_last: bool = False


_ALL = frozenset({"llama", "mistral", "mixtral", "bloom", "opt", "gpt2", "gptj", "gptneox"})
RELEASES: dict[str, Release] = {
    "0.8": Release("0.8", "90c7199", "0.8.268", _KEYS_08, "kargs-lenient", False, False, False, False, None,
                   "none", "largest", False, False, frozenset({"bin", "bin-dir"}), False,
                   _ALL - {"mistral", "mixtral"}),
    "0.9": Release("0.9", "8b01968", "0.9.474", _KEYS_09, "kargs-lenient", False, True, True, False, "positional",
                   "cb-single-equal", "largest", False, False, frozenset({"bin", "bin-dir", "safetensors"}), False,
                   _ALL),
    "0.10-early": Release("0.10-early", "7a30b42", "0.10.0.21", _KEYS_010E, "kargs-strict", True, True, True, False,
                          "positional", "cb-single-equal+bsh", "largest", False, False,
                          frozenset({"bin", "bin-dir", "safetensors", "sharded"}), False, _ALL,
                          leftover_skips_last=True),
    "0.10-late": Release("0.10-late", "0623de2", "0.10.0.332", _KEYS_010L, "kargs-strict", True, True, True, False,
                         "positional", "cb-npos-single+bsh-single", "fit", True, True,
                         frozenset({"bin", "bin-dir", "safetensors", "sharded"}), False, _ALL,
                         leftover_skips_last=True),
    "0.11": Release("0.11", "c8d6bdc", "0.11.351", _KEYS_011, "keyword-only", True, True, True, True, "positional",
                    "bsh-single", "fit", True, True, frozenset({"bin", "bin-dir", "safetensors", "sharded"}), False,
                    _ALL),
    "0.13": Release("0.13", "1ade6d7", "0.13.322", _KEYS_013, "keyword-only", True, True, True, True, "kwargs",
                    "bsh-single+max", "fit", True, True, frozenset({"bin", "bin-dir", "safetensors", "sharded"}),
                    True, _ALL),
}
# The equivalence matrix of tests/neuron (at least these).
MATRIX = ("0.9", "0.10-early", "0.10-late", "0.11", "0.13")


def selected() -> Release:
    """The release this import of the double emulates: ``$TNX_DOUBLE_VERSION`` (a label above), else 0.13."""
    label = os.environ.get(ENV, DEFAULT)
    if label not in RELEASES:
        raise RuntimeError(f"{ENV}={label!r}: the double emulates {sorted(RELEASES)}")
    return RELEASES[label]
