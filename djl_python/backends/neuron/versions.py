"""What each transformers-neuronx (TNX) version supports: the one version table.

Every version gate of the Neuron backend reads this module, so "which TNX
supports what" is answered in one place (also rendered in docs/neuron.md).
Sources: aws-neuron/transformers-neuronx at 90c7199 (0.8), 8b01968 (0.9),
7a30b42 (0.10 early), 0623de2 (0.10 late), c8d6bdc (0.11), 1ade6d7 (0.13):
``src/transformers_neuronx/{__init__,config,module,base}.py`` and the model
packages; plus the release notes for continuous batching.

* Supported range: **0.9 and later**. 0.8 (90c7199) exports nothing at the top
  level, has no continuous batching and reads only ``pytorch_model.bin``.
* Model classes live at ``transformers_neuronx.<package>.model.<Class>`` in
  every version; the top-level re-exports only appeared in 0.10.
* ``NeuronConfig`` took ``**kargs`` up to 0.10: 0.9 silently drops unknown keys
  (8b01968), 0.10 rejects them with an ``AssertionError``; from 0.11 it is
  keyword-only and still rejects unknown keys. Up to 0.10 the accepted keys come
  from :data:`NEURON_CONFIG_KEYS`; from 0.11 from the installed signature, so a
  newer TNX is never second-guessed.
* Behaviour that changed inside a minor version is detected on the installed
  package (:class:`TnxFeatures`), never inferred from ``major.minor``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, replace
from types import ModuleType

MIN_VERSION = (0, 9)


@dataclass(frozen=True)
class ModelSupport:
    """One architecture: where its TNX class lives and from which version."""

    package: str  # transformers_neuronx.<package>.model
    class_name: str
    since: tuple[int, int]
    continuous_batching_since: tuple[int, int] | None = None
    serializable: bool = True  # save()/load() of compiled graphs (NeuronModelBase)
    context_length_estimate: bool = True  # prefill buckets (not on the old PretrainedModel classes)
    amp_f32_only: bool = False
    auto_class: bool = True  # NeuronAutoModelForCausalLM maps model_type to class_name
    single_row: bool = False  # attention ignores left padding: serve one occupied row at a time
    quantization: bool = True  # False: the constructor raises NotImplementedError on neuron_config.quant
    unroll: bool = True  # False: the constructor raises NotImplementedError on any unroll
    context_buckets_since: tuple[int, int] = MIN_VERSION  # before it: no list of prefill buckets
    padded_static_nan_until: tuple[int, int] | None = None  # before it: left-padded static rows answer NaN
    # Continuous batching missing on the late 0.10 (0623de2, ``vectorize_last_token_id``) until this release.
    continuous_batching_gap_until: tuple[int, int] | None = None


# model_type (HF config.json) -> TNX class. Continuous batching for Llama and Mistral from 0.9:
# 8b01968 base.py:242-271 (_prepare_for_continuous_batching), llama/model.py:60 and
# mistral/model.py:60 (one-row context graphs under continuous_batching); LMI 0.26 on 0.9
# rolled with it (djl-serving v0.26.0 neuron_utils/model_loader.py:108-113). It must be used
# there: static batching of these models with non-zero start_ids returns NaN before 0.11
# (aws-neuron/transformers-neuronx#79, fixed in Neuron 2.19 / TNX 0.11).
MODELS: dict[str, ModelSupport] = {
    "llama": ModelSupport("llama", "LlamaForSampling", (0, 9), continuous_batching_since=(0, 9),
                          padded_static_nan_until=(0, 11)),
    # Mistral on the late 0.10 (0623de2 mistral/model.py:68-72, 151) keeps one window counter per row
    # and adds every prefilled row's last_token_id to it: a prefill of fewer rows than the batch
    # fails on the shapes. 7a30b42 keeps one integer; c8d6bdc fixes it (:69, 153-155).
    "mistral": ModelSupport("mistral", "MistralForSampling", (0, 9), continuous_batching_since=(0, 9),
                            continuous_batching_gap_until=(0, 11)),
    "mixtral": ModelSupport("mixtral", "MixtralForSampling", (0, 9)),
    "bloom": ModelSupport("bloom", "BloomForSampling", (0, 9)),
    # OPT on 0.9 (8b01968 opt/model.py:79-97) takes one int context_length_estimate, wrapped as
    # [context_length_estimate]: a list fails in to_neuron() when the context graph is built, and
    # forward() never runs that graph (:146-147; only sample() does). Not passing one keeps 0.9's
    # forward() prefilling through its token graph. Buckets from 0.10 (7a30b42 opt/model.py:64-65).
    "opt": ModelSupport("opt", "OPTForSampling", (0, 9), context_buckets_since=(0, 10)),
    # NeuronAutoModelForCausalLM maps gpt2 to GPT2ForSamplingWithContextBroadcasting, whose
    # reset(context_length_estimate) needs an argument and whose prefill broadcasts ONE prompt
    # (prompt_batch_size=1) to every row. DJL (afece25d neuron_utils/model_loader.py) and
    # optimum-neuron (GPT2NeuronConfig.NEURONX_CLASS, v0.0.17..v0.0.28) load GPT2ForSampling:
    # reset() without arguments, start_ids through position ids, no context buckets.
    "gpt2": ModelSupport("gpt2", "GPT2ForSampling", (0, 9), context_length_estimate=False, auto_class=False),
    # The older `module.PretrainedModel` generation: no serialization, no prefill buckets.
    # GPT-J's attention mask is causal only (gptj/hlo.py decoder_attention_mask_legacy): left
    # padding is attended, so rows of different lengths cannot share a batch.
    # gptj/model.py and gptneox/model.py (8b01968 .. 1ade6d7) raise NotImplementedError on quantization,
    # GPT-NeoX also on unroll.
    "gptj": ModelSupport("gptj", "GPTJForSampling", (0, 9), serializable=False, context_length_estimate=False,
                         single_row=True, quantization=False),
    "gpt_neox": ModelSupport(
        "gptneox", "GPTNeoXForSampling", (0, 9), serializable=False, context_length_estimate=False, amp_f32_only=True,
        quantization=False, unroll=False,
    ),
}
# Architectures users ask for that no TNX release implements (checked up to 0.13).
KNOWN_UNSUPPORTED: dict[str, str] = {
    "gpt_bigcode": "transformers-neuronx has no GPTBigCode (StarCoder/SantaCoder) implementation in any release "
    "up to 0.13; serve it with device=cpu or device=cuda",
}
AUTO_CLASS_SINCE = (0, 10)  # NeuronAutoModelForCausalLM
LAYOUT_ENUM_SINCE = (0, 11)  # constants.Layout; earlier versions take the plain strings
SHARDED_CHECKPOINTS_SINCE = (0, 10)  # module.py reads *.index.json from 7a30b42; 8b01968 does not

# NeuronConfig keys accepted by the **kargs versions (<= 0.10), from each release's config.py.
_KEYS_0_8 = frozenset({"all_reduce_dtype", "cast_logits_dtype", "fuse_qkv", "quant", "sparse_attn"})
_KEYS_0_9 = _KEYS_0_8 | {
    "attention_layout",
    "collectives_layout",
    "continuous_batching",
    "group_query_attention",
    "on_device_embedding",
    "use_2d_cache_ids",
}
_KEYS_0_10 = _KEYS_0_9 | {"cache_layout", "log_softmax_scores", "on_device_generation", "lhs_aligned"}
NEURON_CONFIG_KEYS: dict[tuple[int, int], frozenset[str]] = {(0, 8): _KEYS_0_8, (0, 9): _KEYS_0_9, (0, 10): _KEYS_0_10}


class NeuronVersionError(ValueError):
    """The installed transformers-neuronx cannot do what the configuration asks."""


def parse_version(text: str) -> tuple[int, int]:
    """``"0.13.380"`` / ``"0.10.0.21"`` / ``"0.13.x"`` -> ``(0, 13)``."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if not match:
        raise NeuronVersionError(f"cannot parse the transformers-neuronx version {text!r}")
    return int(match.group(1)), int(match.group(2))


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def supported_table(version: tuple[int, int]) -> str:
    """One line per architecture: ``llama (>=0.8, continuous batching >=0.10)``, marking the unavailable."""
    lines = []
    for model_type, sup in MODELS.items():
        cb = f", continuous batching >={fmt(sup.continuous_batching_since)}" if sup.continuous_batching_since else ""
        missing = "" if version >= sup.since else "  [not in the installed version]"
        lines.append(f"{model_type} (>={fmt(sup.since)}{cb}){missing}")
    return "; ".join(lines)


def model_support(model_type: str, version: tuple[int, int]) -> ModelSupport:
    """The TNX class entry for ``model_type``, or a ``NeuronVersionError`` saying which versions support what."""
    if version < MIN_VERSION:
        raise NeuronVersionError(
            f"transformers-neuronx {fmt(version)} is too old; this backend supports >= {fmt(MIN_VERSION)} "
            "(0.8 has no top-level NeuronConfig/QuantizationConfig/ContinuousBatchingConfig and reads only "
            "pytorch_model.bin); upgrade transformers-neuronx"
        )
    sup = MODELS.get(model_type)
    if sup is None:
        why = KNOWN_UNSUPPORTED.get(model_type, "no transformers-neuronx class exists for it")
        raise NeuronVersionError(
            f"model_type {model_type!r} is not supported on Neuron: {why}. "
            f"Supported by transformers-neuronx: {supported_table(version)}"
        )
    if version < sup.since:
        raise NeuronVersionError(
            f"model_type {model_type!r} needs transformers-neuronx >= {fmt(sup.since)} "
            f"(installed: {fmt(version)}). Supported: {supported_table(version)}"
        )
    if version < sup.context_buckets_since:
        return replace(sup, context_length_estimate=False)
    return sup


def supports_continuous_batching(sup: ModelSupport, version: tuple[int, int]) -> bool:
    return sup.continuous_batching_since is not None and version >= sup.continuous_batching_since


def neuron_config_keys(tnx: ModuleType, version: tuple[int, int]) -> frozenset[str]:
    """The keyword arguments the installed ``NeuronConfig`` accepts.

    From 0.11 the keyword-only signature is the truth; before, ``**kargs`` hides
    the keys, so the per-release table is used.
    """
    params = inspect.signature(tnx.NeuronConfig.__init__).parameters.values()
    named = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if named:
        return frozenset(named)
    for since in sorted(NEURON_CONFIG_KEYS, reverse=True):
        if version >= since:
            return NEURON_CONFIG_KEYS[since]
    return frozenset()


# First release of keys added after 0.10 (keyword-only NeuronConfig, so the installed signature
# decides; this is only for messages): c8d6bdc config.py:156-159; release-2.20 (0.12) 6c0b875
# config.py:203-220; 1ade6d7 config.py:239.
KEYS_SINCE_0_11: dict[str, tuple[int, int]] = {
    "qkv_tiling": (0, 11), "weight_tiling": (0, 11), "shard_over_sequence": (0, 11),
    "fuse_mlp": (0, 12), "fused_rmsnorm_qkv": (0, 12), "compilation_worker_count": (0, 13),
}


def key_since(key: str) -> str:
    """The first release whose ``NeuronConfig`` accepts ``key`` (for error messages)."""
    for since in sorted(NEURON_CONFIG_KEYS):
        if key in NEURON_CONFIG_KEYS[since]:
            return fmt(since)
    return fmt(KEYS_SINCE_0_11.get(key, (0, 11)))


@dataclass(frozen=True)
class TnxFeatures:
    """What the installed TNX does where it changed within a minor version (detected, not inferred).

    * ``vectorized_last_token``: ``NeuronConfig.vectorize_last_token_id`` exists
      (0623de2, late 0.10). Without it (8b01968, 7a30b42) a continuous-batching
      prefill pads ``cache_ids`` to the *largest* context bucket, a one-row
      prefill answers at ``width - 1`` for the whole batch, and ``from_pretrained``
      asserts one context bucket equal to one ``n_positions``.
    * ``layout_enum``: ``transformers_neuronx.Layout`` exists (c8d6bdc on).
    * ``presharded``: ``save(directory, sharded_weights=...)`` exists (1ade6d7).
    """

    version: tuple[int, int]
    vectorized_last_token: bool
    layout_enum: bool
    presharded: bool

    @property
    def multi_bucket_continuous_batching(self) -> bool:
        return self.vectorized_last_token

    @property
    def sharded_checkpoints(self) -> bool:
        return self.version >= SHARDED_CHECKPOINTS_SINCE


def detect_features(tnx: ModuleType, version: tuple[int, int]) -> TnxFeatures:
    """Probe the installed package (cheap: builds one default ``NeuronConfig``, loads no model)."""
    import importlib

    config = importlib.import_module("transformers_neuronx.config")
    try:
        vectorized = hasattr(config.NeuronConfig(), "vectorize_last_token_id")
    except Exception:  # noqa: BLE001 - an unusable NeuronConfig() has no such feature
        vectorized = False
    base = importlib.import_module("transformers_neuronx.base")
    save = getattr(base.NeuronModelBase, "save", None)
    presharded = save is not None and "sharded_weights" in inspect.signature(save).parameters
    return TnxFeatures(version, vectorized, hasattr(tnx, "Layout"), presharded)
