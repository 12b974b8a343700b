"""The load plan: every transformers-neuronx (TNX) argument, decided before anything is compiled.

A :class:`NeuronLoadPlan` is plain JSON-able data: the ``from_pretrained``
keyword arguments, the ``NeuronConfig`` options (as strings and numbers, not
TNX objects) and the batching strategy. It comes from exactly one of

* the serving configuration (:func:`plan_from_config`),
* the ``neuron.djl_python.plan`` record that ``djl-partition`` wrote next to
  the compiled graphs (:meth:`NeuronLoadPlan.from_json`), or
* an optimum-neuron export's ``neuron`` block (:func:`plans_from_optimum_block`:
  one candidate per optimum-neuron era, v0.0.17 .. v0.0.28).

Invariant: TNX finds a saved NEFF only when the graphs hash identically, i.e.
when every argument is identical; reloading a partitioned folder therefore
replays the recorded plan instead of re-deriving it from a configuration that
may have drifted.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from djl_python.backends.neuron.versions import (
    NeuronVersionError,
    TnxFeatures,
    fmt,
    model_support,
    supports_continuous_batching,
)
from djl_python.config import ConfigError, ConfigProblem, dtypes

if TYPE_CHECKING:
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)

CONTINUOUS = "continuous_batching"
NAIVE = "naive_rolling_batch"
SINGLE_ROW = "single_row"  # the naive strategy with one KV row (GPT-J; llama statically before 0.11)
DEFAULT_MAX_N_POSITIONS = 4096  # DJL 0.30's smart default cap

# NeuronConfig key -> the option a user wrote to ask for it (for version errors).
OPTION_OF_KEY: dict[str, str] = {
    "continuous_batching": "option.rolling_batch_strategy=continuous_batching",
    "quant": "option.quantize=static_int8",
    "group_query_attention": "option.group_query_attention",
    "attention_layout": "option.attention_layout",
    "collectives_layout": "option.collectives_layout",
    "cache_layout": "option.cache_layout",
    "fuse_qkv": "option.fuse_qkv",
    "all_reduce_dtype": "option.all_reduce_dtype",
    "cast_logits_dtype": "option.cast_logits_dtype",
    "on_device_embedding": "option.on_device_embedding",
    "fuse_mlp": "option.fuse_mlp",
    "fused_rmsnorm_qkv": "option.fused_rmsnorm_qkv",
    "qkv_tiling": "option.qkv_tiling",
    "weight_tiling": "option.weight_tiling",
    "shard_over_sequence": "option.shard_over_sequence",
    "compilation_worker_count": "option.compilation_worker_count",
}
# Passed to NeuronConfig only when true, as LMI's transformers-neuronx loader does (djl-serving afece25d
# neuron_utils/model_loader.py:194-206 ``if self.config.X``): an explicit false leaves TNX's default (false),
# so graphs LMI compiled with the same serving.properties match.
WHEN_TRUE_KEYS = ("fuse_qkv", "fuse_mlp", "fused_rmsnorm_qkv", "qkv_tiling", "weight_tiling", "shard_over_sequence")
# NeuronConfig keys that change how graphs are compiled, not the graphs: left out of the manifest's
# compile configuration, so a different worker count still loads the saved graphs.
COMPILE_ONLY_KEYS = frozenset({"compilation_worker_count"})


@dataclass
class NeuronLoadPlan:
    """Everything TNX is called with. ``prefill_buckets`` and ``n_positions`` give the backend limits."""

    model_type: str
    strategy: str  # CONTINUOUS or NAIVE
    batch_size: int
    n_positions: int
    prefill_buckets: list[int]
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # from_pretrained(**) minus neuron_config
    neuron_options: dict[str, Any] = field(default_factory=dict)  # NeuronConfig(**) in JSON form
    variant: str = ""  # where the arguments come from, for logs (e.g. "optimum v0.0.22-23")
    speculation_length: int = 0  # enable_speculative_decoder(k) before to_neuron() (0: none)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NeuronLoadPlan:
        try:
            return cls(**data)
        except TypeError as err:
            raise NeuronVersionError(f"unreadable neuron load plan record {data!r}: {err}") from err


def default_n_positions(hf_config: dict[str, Any]) -> int:
    """``min(max_position_embeddings, 4096)``; 2048 for models without a limit (ALiBi: bloom)."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = hf_config.get(key)
        if isinstance(value, int) and value > 1:
            return min(value, DEFAULT_MAX_N_POSITIONS)
    return 2048


def choose_strategy(config: HandlerConfig, model_type: str, features: TnxFeatures) -> str:
    """The configuration's strategy (DJL's rule: continuous for llama/mistral with more than one
    slot, else naive; naive for static batches too), gated by what the installed TNX can do.

    GPT-J always runs one occupied row at a time (:data:`SINGLE_ROW`): its mask
    ignores ``start_ids`` (transformers-neuronx ``gptj/hlo.py``), so a batch of
    left-padded rows would attend the padding. So does Llama's naive or static
    batching before TNX 0.11, whose left-padded rows (non-zero ``start_ids``) answer
    NaN there (aws-neuron/transformers-neuronx#79). An explicit
    ``rolling_batch_strategy=continuous_batching`` the installed TNX cannot do for
    this architecture is an error; the automatic choice falls back to the naive
    strategy with a warning.
    """
    version = features.version
    sup = model_support(model_type, version)
    wanted = config.effective_rolling_batch_strategy(model_type) or NAIVE
    if sup.single_row:
        if config.rolling_batch_strategy == CONTINUOUS:
            raise NeuronVersionError(
                f"option.rolling_batch_strategy=continuous_batching: transformers-neuronx has no continuous "
                f"batching for {model_type!r}; it is served one row at a time")
        return SINGLE_ROW
    if wanted != CONTINUOUS and sup.padded_static_nan_until and version < sup.padded_static_nan_until:
        logger.warning(
            "%s batching of %r on transformers-neuronx %s answers NaN for left-padded rows "
            "(aws-neuron/transformers-neuronx#79, fixed in %s): serving one row at a time; "
            "rolling_batch_strategy=continuous_batching batches them correctly", wanted, model_type, fmt(version),
            fmt(sup.padded_static_nan_until))
        return SINGLE_ROW
    gap = bool(sup.continuous_batching_gap_until and features.vectorized_last_token
               and version < sup.continuous_batching_gap_until)
    if wanted != CONTINUOUS or (supports_continuous_batching(sup, version) and not gap):
        return wanted
    since = f">= {fmt(sup.continuous_batching_since)}" if sup.continuous_batching_since else "no release"
    message = (f"transformers-neuronx supports continuous batching for {model_type!r} in {since} (installed "
               f"{fmt(version)})")
    if gap:
        message = (f"transformers-neuronx {fmt(version)} (late 0.10) breaks continuous batching for {model_type!r} "
                   f"(its per-row window counter, fixed in {fmt(sup.continuous_batching_gap_until)})")
    if config.rolling_batch_strategy == CONTINUOUS:
        raise NeuronVersionError(
            f"option.rolling_batch_strategy=continuous_batching: {message}; "
            "use rolling_batch_strategy=naive_rolling_batch"
        )
    logger.warning("%s; using the naive rolling batch", message)
    return NAIVE


def djl_context_buckets(n_positions: int) -> list[int]:
    """DJL's default prefill buckets under continuous batching (djl-serving afece25d
    ``neuron_utils/utils.py`` ``build_context_length_estimates``): ``[n]`` up to 128, else 128,
    then 1024, 2048, ... below ``n``, then ``n``."""
    if n_positions <= 128:
        return [n_positions]
    buckets, size = [128], 1024
    while n_positions > size:
        buckets.append(size)
        size *= 2
    return buckets + [n_positions]


def continuous_batching_buckets(config: HandlerConfig, n_positions: int, features: TnxFeatures) -> list[int]:
    """Context buckets for continuous batching, within what the installed TNX asserts.

    Without ``vectorize_last_token_id`` (8b01968, 7a30b42) ``from_pretrained`` asserts
    ``context_length_estimate == n_positions == [one value]`` (``module.py`` ``_sanity_check``)
    and a prefill pads ``cache_ids`` to the largest bucket only. ``cache_layout=BSH`` takes one
    bucket in every release.
    """
    single = config.cache_layout == "BSH" or not features.multi_bucket_continuous_batching
    if config.context_length_estimate:
        buckets = sorted(set(config.context_length_estimate))
        if not features.multi_bucket_continuous_batching and buckets != [n_positions]:
            raise NeuronVersionError(
                f"option.context_length_estimate={','.join(map(str, buckets))}: the installed transformers-neuronx "
                f"{fmt(features.version)} (before 0.10.0.332: no NeuronConfig.vectorize_last_token_id) takes one "
                f"context bucket equal to n_positions={n_positions} under continuous batching; unset it or upgrade")
        return buckets
    return [n_positions] if single else djl_context_buckets(n_positions)


def _amp(config: HandlerConfig, model_type: str, version: tuple[int, int]) -> str:
    f32_only = model_support(model_type, version).amp_f32_only
    if config.dtype is None:
        # Neuron's default is fp16, except where TNX's graphs only work in f32 (GPT-NeoX).
        return "f32" if f32_only else "f16"
    amp = dtypes.amp(config.dtype)
    if f32_only and amp != "f32":
        raise NeuronVersionError(
            f"option.dtype={config.dtype}: transformers-neuronx runs {model_type} in fp32 only; set option.dtype=fp32"
        )
    return amp


def _unroll(config: HandlerConfig) -> int | None:
    if config.unroll is None:
        return None
    try:
        return int(config.unroll)
    except ValueError as err:
        raise ConfigError([ConfigProblem("option.unroll", config.unroll, "must be a whole number of layers")]) from err


def neuron_options_from_config(config: HandlerConfig, *, amp: str, strategy: str, batch_size: int) -> dict[str, Any]:
    """The ``NeuronConfig`` options the configuration asks for, in JSON form (unset ones omitted)."""
    options: dict[str, Any] = {}
    if strategy == CONTINUOUS:
        options["continuous_batching"] = batch_size
    if config.quantize == "static_int8":
        # TNX requires amp == dequant_dtype.
        options["quant"] = {"quant_dtype": "s8", "dequant_dtype": amp}
    for key in ("group_query_attention", "attention_layout", "collectives_layout", "cache_layout",
                "all_reduce_dtype", "cast_logits_dtype", "compilation_worker_count"):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    for key in WHEN_TRUE_KEYS:
        if getattr(config, key):
            options[key] = True
    if config.fused_rmsnorm_qkv and not (config.fuse_qkv and config.attention_layout == "BSH"
                                         and config.group_query_attention == "replicated-heads"):
        logger.warning("option.fused_rmsnorm_qkv=true: transformers-neuronx turns it off unless fuse_qkv=true, "
                       "attention_layout=BSH and group_query_attention=replicated-heads (1ade6d7 config.py:341-345)")
    embedding = on_device_embedding(config)
    if embedding is not None:
        options["on_device_embedding"] = embedding
    _check_on_device_generation(config)
    return options


def on_device_embedding(config: HandlerConfig) -> bool | None:
    """``option.on_device_embedding``, else LMI 0.28-0.29's ``on_device_embedding_config`` file, else None
    (TNX's default, off). LMI 0.28-0.29 passed the file's whole object as ``NeuronConfig.on_device_embedding``
    (djl-serving v0.28.0 neuron_utils/model_loader.py:189-192), so a non-empty file turns it on; only an
    ``on_device_embedding`` key in it can say otherwise."""
    from djl_python.config import load_on_device_embedding_config

    from_file = load_on_device_embedding_config(config.on_device_embedding_config)
    wanted: bool | None = None
    if from_file:
        other = sorted(set(from_file) - {"on_device_embedding"})
        if other:
            logger.warning("option.on_device_embedding_config: keys %s have no effect; as in LMI 0.28-0.29, a "
                           "non-empty file turns on_device_embedding on (set option.on_device_embedding instead)",
                           other)
        wanted = bool(from_file.get("on_device_embedding", True))
    if config.on_device_embedding is not None:
        if wanted is not None and wanted != config.on_device_embedding:
            raise ConfigError([ConfigProblem(
                "option.on_device_embedding, option.on_device_embedding_config", None,
                f"option.on_device_embedding={str(config.on_device_embedding).lower()} contradicts "
                f"option.on_device_embedding_config ({config.on_device_embedding_config} turns it "
                f"{'on' if wanted else 'off'}); set only option.on_device_embedding", message_names_key=True)])
        wanted = config.on_device_embedding
    return wanted


def _check_on_device_generation(config: HandlerConfig) -> None:
    """LMI reads ``on_device_generation`` as a JSON file; an empty object does nothing there or here."""
    from djl_python.config import load_on_device_embedding_config

    settings = load_on_device_embedding_config(config.on_device_generation, "option.on_device_generation")
    if settings:
        raise ConfigError([ConfigProblem(
            "option.on_device_generation", config.on_device_generation,
            "on-device generation is not supported: it returns token ids, and this handler samples on the host "
            "from the logits; unset it (LMI's transformers-neuronx loader fails on it as well, djl-serving afece25d "
            "neuron_utils/model_loader.py:221-224)")])


def _within_sliding_window(config: HandlerConfig, model_type: str, hf_config: dict[str, Any], n_positions: int,
                           version: tuple[int, int]) -> int:
    """Mistral's positions, kept within its sliding window before TNX 0.13.

    TNX's Mistral slices the KV cache to the window when a bucket is longer than
    ``sliding_window``, starting at a model-wide ``num_processed_tokens`` that grows with every
    forward of every request (8b01968 ``mistral/model.py:133-149``, ``mistral/hlo.py:170-181``) and
    is reset only by ``reset()`` from c8d6bdc (``:129-133``), which a rolling batch never calls
    per request: the window then lands on the wrong tokens. Within the window nothing is sliced
    (8b01968 ``hlo.py:178`` .. c8d6bdc ``:204``). 1ade6d7 computes each row's window from its
    ``cache_ids`` (``mistral/hlo.py:200-201``): no counter, no limit. A default is capped with a
    log line; a larger ``option.n_positions`` is an error.
    """
    window = hf_config.get("sliding_window")
    if (model_type != "mistral" or version >= PER_ROW_WINDOW_SINCE or not isinstance(window, int) or window <= 0
            or n_positions <= window):
        return n_positions
    if config.n_positions:
        raise ConfigError([ConfigProblem(
            "option.n_positions", config.n_positions,
            f"exceeds Mistral's sliding_window ({window}); transformers-neuronx then slices attention to a "
            f"window that drifts across requests. Use at most {window}")])
    logger.info("n_positions %d capped at Mistral's sliding_window %d (transformers-neuronx's window slicing "
                "drifts across requests beyond it)", n_positions, window)
    return window


def plan_from_config(config: HandlerConfig, model_type: str, hf_config: dict[str, Any], *, tp_degree: int,
                     features: TnxFeatures) -> NeuronLoadPlan:
    """Derive the plan from the serving configuration (``HandlerConfig``)."""
    version = features.version
    sup = model_support(model_type, version)
    strategy = choose_strategy(config, model_type, features)
    batch_size = config.max_slots
    if strategy == SINGLE_ROW and batch_size > 1:
        logger.warning("%s is served one row at a time (batch of %d requested): transformers-neuronx %s "
                       "cannot batch its left-padded rows (see the warning above for llama)",
                       model_type, batch_size, fmt(version))
        batch_size = 1
    n_positions = _within_sliding_window(config, model_type, hf_config,
                                         config.n_positions or default_n_positions(hf_config), version)
    too_long = [b for b in (config.context_length_estimate or []) if b > n_positions]
    if too_long:
        # 1ade6d7 module.py:401-406 asserts it at from_pretrained; earlier releases build a context graph
        # longer than the KV cache.
        raise ConfigError([ConfigProblem(
            "option.context_length_estimate, option.n_positions", None,
            f"option.context_length_estimate has buckets {too_long} longer than n_positions {n_positions} (the "
            f"{'configured' if config.n_positions else 'default'} value{', capped at the sliding window' if not config.n_positions else ''}); "
            "lower the buckets or raise option.n_positions", message_names_key=True)])
    amp = _amp(config, model_type, version)
    if config.cache_layout == "BSH" and strategy != CONTINUOUS:
        # module.py _sanity_check (7a30b42 on): "BSH cache layout can only be configured with continuous batching."
        raise ConfigError([ConfigProblem(
            "option.cache_layout", "BSH",
            f"needs continuous batching, which {model_type!r} does not use here ({strategy}); unset it")])
    kwargs: dict[str, Any] = {"batch_size": batch_size, "amp": amp, "tp_degree": tp_degree}
    if strategy == CONTINUOUS and version < (0, 10) and str(config.attention_layout or "").upper() == "BSH":
        # 8b01968 base.py:323 reads a BSH hidden state as HSB in the multi-row context path (fixed in
        # 7a30b42 base.py:358-359): rows would be sliced along the hidden size.
        raise ConfigError([ConfigProblem(
            "option.attention_layout", config.attention_layout,
            f"BSH with continuous batching needs transformers-neuronx >= 0.10 (installed {fmt(version)}); unset it")])
    if strategy == CONTINUOUS:
        buckets = continuous_batching_buckets(config, n_positions, features)
        # One token bucket of exactly n_positions: every slot owns a full-length KV row.
        kwargs["n_positions"] = [n_positions]
        kwargs["context_length_estimate"] = buckets
        prefill_buckets = buckets  # a longer prompt fails TNX's "invalid input prompt length" assert
    else:
        kwargs["n_positions"] = n_positions
        buckets = sorted(set(config.context_length_estimate or []))
        if buckets and not sup.context_length_estimate:
            logger.warning(
                "option.context_length_estimate is ignored: transformers-neuronx %s's %s has no prefill buckets",
                fmt(version), sup.class_name)
            buckets = []
        if (strategy == SINGLE_ROW and sup.padded_static_nan_until and version < sup.padded_static_nan_until
                and sup.context_length_estimate and version >= sup.context_buckets_since):
            # One row must never be left-padded here (NaN, transformers-neuronx#79); a bucket of
            # n_positions keeps every prompt within one context graph.
            buckets = sorted(set(buckets or [n_positions // 2]) | {n_positions})
        if buckets:
            kwargs["context_length_estimate"] = buckets
        # Static batching takes any prompt up to n_positions: base.context() runs the largest bucket
        # and then the rest one token at a time.
        prefill_buckets = sorted(set(buckets) | {n_positions})
    unroll = _unroll(config)
    if unroll is not None:
        if not sup.unroll:
            raise NeuronVersionError(f"option.unroll: transformers-neuronx's {sup.class_name} does not implement "
                                     "unroll; unset it")
        kwargs["unroll"] = unroll
    if config.quantize and not sup.quantization:
        raise NeuronVersionError(f"option.quantize={config.quantize}: transformers-neuronx's {sup.class_name} does "
                                 "not implement quantization; unset it")
    options = neuron_options_from_config(config, amp=amp, strategy=strategy, batch_size=batch_size)
    speculation = _speculation_length(config, model_type, strategy, batch_size, version)
    return NeuronLoadPlan(model_type, strategy, batch_size, n_positions, prefill_buckets, kwargs, options,
                          speculation_length=speculation)


SPECULATION_SINCE = (0, 11)  # c8d6bdc llama/model.py:180-217: speculative_forward without _preprocess
PER_ROW_WINDOW_SINCE = (0, 12)  # Mistral's window from each row's cache_ids (release-2.20 6c0b875, 1ade6d7 hlo.py:200-201)


def plan_hazard(plan: NeuronLoadPlan, hf_config: dict[str, Any], features: TnxFeatures, *,
                built: bool = False) -> str | None:
    """Why ``plan`` would crash or mis-generate on the installed TNX, or None. The same rules
    ``plan_from_config`` applies while it builds a plan, for plans it did not build (optimum-neuron
    era candidates, recorded plans). ``built``: the model exists already (optimum-neuron built it with
    the installed TNX), so continuous batching it was built with is not second-guessed by this
    backend's table of which architectures have it; every other rule applies."""
    version = features.version
    sup = model_support(plan.model_type, version)
    if plan.strategy in (NAIVE, SINGLE_ROW) and plan.batch_size > 1:
        if sup.single_row:
            return f"{plan.model_type} attends left padding (its mask ignores start_ids), so a batch of {plan.batch_size} mis-generates"
        if sup.padded_static_nan_until and version < sup.padded_static_nan_until:
            return (f"static batching of {plan.batch_size} answers NaN for left-padded rows on transformers-neuronx "
                    f"{fmt(version)} (aws-neuron/transformers-neuronx#79, fixed in {fmt(sup.padded_static_nan_until)})")
    if plan.strategy == CONTINUOUS:
        if not supports_continuous_batching(sup, version) and not built:
            return f"transformers-neuronx {fmt(version)} has no continuous batching for {plan.model_type!r}"
        if (sup.continuous_batching_gap_until and features.vectorized_last_token
                and version < sup.continuous_batching_gap_until):
            return (f"transformers-neuronx {fmt(version)} (late 0.10) breaks continuous batching for "
                    f"{plan.model_type!r} (fixed in {fmt(sup.continuous_batching_gap_until)})")
        if version < (0, 10) and str(plan.neuron_options.get("attention_layout", "")).upper() == "BSH":
            return "attention_layout=BSH with continuous batching is read as HSB before transformers-neuronx 0.10"
    window = hf_config.get("sliding_window")
    if (plan.model_type == "mistral" and version < PER_ROW_WINDOW_SINCE and isinstance(window, int) and window > 0
            and plan.n_positions > window):
        return (f"n_positions {plan.n_positions} exceeds Mistral's sliding_window {window}, whose window drifts "
                f"across requests before transformers-neuronx {fmt(PER_ROW_WINDOW_SINCE)}")
    buckets = plan.model_kwargs.get("context_length_estimate")
    if isinstance(buckets, list) and buckets and max(buckets) > plan.n_positions:
        return f"context_length_estimate {buckets} exceeds n_positions {plan.n_positions}"
    return None


def _speculation_length(config: HandlerConfig, model_type: str, strategy: str, batch_size: int,
                        version: tuple[int, int]) -> int:
    """``speculative_length`` when ``speculative_draft_model`` is set and the target can speculate as LMI 0.28
    does (backends/neuron/speculation.py): Llama, one sequence, the naive strategy, TNX 0.11+."""
    if not config.speculative_draft_model:
        return 0
    key = "option.speculative_draft_model"
    if model_type != "llama":
        raise NeuronVersionError(f"{key}: speculative decoding needs a Llama target (transformers-neuronx's "
                                 f"speculative_forward); this model is {model_type!r}")
    if version < SPECULATION_SINCE:
        raise NeuronVersionError(
            f"{key}: speculative decoding needs transformers-neuronx >= {fmt(SPECULATION_SINCE)} (installed "
            f"{fmt(version)}, whose speculative_forward preprocesses a static batch as a context; LMI 0.28 worked "
            "around it with its own kernel call)")
    if batch_size != 1 or strategy == CONTINUOUS:
        raise ConfigError([ConfigProblem(
            f"{key}, option.{config.slots_key}", None,
            f"{key} serves one sequence at a time, as LMI 0.28 does: set option.{config.slots_key}=1 "
            "(and no rolling_batch_strategy=continuous_batching)", message_names_key=True)])
    if config.speculative_length < 2:
        raise ConfigError([ConfigProblem("option.speculative_length", config.speculative_length,
                                         "must be at least 2: the draft proposes speculative_length - 1 tokens")])
    return int(config.speculative_length)


# What each optimum-neuron release passed to transformers-neuronx when it exported a model
# (huggingface/optimum-neuron optimum/neuron/modeling_decoder.py and the exporter's
# model_configs): the ``neuron`` block records none of it, so every era is a candidate.
#   v0.0.17-18: from_pretrained(batch_size, n_positions, tp_degree, amp), no NeuronConfig.
#   v0.0.19-21: + NeuronConfig(continuous_batching) with n_positions=[seq],
#               context_length_estimate=[seq] when batch_size > 1 for llama and mistral.
#   v0.0.22-24: NeuronConfig(attention_layout=...) always (BSH for llama, HSB otherwise);
#               mixtral continuous batching in v0.0.22-23 only.
#   v0.0.25-28: + fuse_qkv=True (v0.0.27+: exporter.FUSE_QKV, True for these architectures).
#   (v0.0.28 builds llama with its own LlamaHloModel, not a transformers-neuronx class.)
_OPTIMUM_ERAS: tuple[tuple[str, bool, bool, frozenset[str]], ...] = (
    # (era, neuron_config always, fuse_qkv, continuous-batching architectures)
    ("v0.0.25-28", True, True, frozenset({"llama", "mistral"})),
    ("v0.0.24", True, False, frozenset({"llama", "mistral"})),
    ("v0.0.22-23", True, False, frozenset({"llama", "mistral", "mixtral"})),
    ("v0.0.19-21", False, False, frozenset({"llama", "mistral"})),
    ("v0.0.17-18", False, False, frozenset()),
)


def plans_from_optimum_block(block: dict[str, Any], model_type: str, features: TnxFeatures) -> list[NeuronLoadPlan]:
    """The candidate plans that may reproduce an optimum-neuron export's graphs, most recent era first.

    The caller tries them in order and recompiles (with a clear log line) when none
    matches the saved NEFFs; eras whose arguments the installed TNX cannot take are skipped.
    """
    missing = [k for k in ("batch_size", "num_cores", "sequence_length", "auto_cast_type") if k not in block]
    if missing:
        raise NeuronVersionError(f"config.json 'neuron' block lacks {missing}; is this an optimum-neuron export?")
    model_support(model_type, features.version)
    batch, seq = int(block["batch_size"]), int(block["sequence_length"])
    amp = dtypes.amp(str(block["auto_cast_type"]))
    base = {"batch_size": batch, "amp": amp, "tp_degree": int(block["num_cores"])}
    plans: list[NeuronLoadPlan] = []
    for era, always_config, fuse, cb_archs in _OPTIMUM_ERAS:
        continuous = batch > 1 and model_type in cb_archs
        options: dict[str, Any] = {}
        if always_config or continuous:
            if always_config:
                options["attention_layout"] = "BSH" if model_type == "llama" else "HSB"
            if fuse:
                options["fuse_qkv"] = True
            if continuous:
                options["continuous_batching"] = batch
        kwargs = dict(base)
        if continuous:
            kwargs.update(n_positions=[seq], context_length_estimate=[seq])
        else:
            kwargs["n_positions"] = seq
        strategy = CONTINUOUS if continuous else NAIVE
        buckets = [seq]
        plan = NeuronLoadPlan(model_type, strategy, batch, seq, buckets, kwargs, options, variant=f"optimum {era}")
        if all(p.model_kwargs != plan.model_kwargs or p.neuron_options != plan.neuron_options for p in plans):
            plans.append(plan)
    return plans
