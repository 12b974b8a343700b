"""The load plan: every transformers-neuronx (TNX) argument, decided before anything is compiled.

A :class:`NeuronLoadPlan` is plain JSON-able data: the ``from_pretrained``
keyword arguments, the ``NeuronConfig`` options (as strings and numbers, not
TNX objects) and the batching strategy. It comes from exactly one of

* the serving configuration (:func:`plan_from_config`),
* the ``neuron.djl_python.plan`` record that ``djl-partition`` wrote next to
  the compiled graphs (:meth:`NeuronLoadPlan.from_json`), or
* an optimum-neuron export's ``neuron`` block (:func:`plan_from_optimum_block`,
  mirroring optimum-neuron v0.0.25's choices).

Invariant: TNX finds a saved NEFF only when the graphs hash identically, i.e.
when every argument is identical; reloading a partitioned folder therefore
replays the recorded plan instead of re-deriving it from a configuration that
may have drifted.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from djl_python.backends.neuron_versions import (
    NeuronVersionError,
    fmt,
    model_support,
    supports_continuous_batching,
)
from djl_python.config import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)

CONTINUOUS = "continuous_batching"
NAIVE = "naive_rolling_batch"
DEFAULT_MAX_N_POSITIONS = 4096  # DJL 0.30's smart default cap
_AMP = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_AMP_FROM_OPTIMUM = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "f32": "f32", "f16": "f16"}

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
    "on_device_embedding": "option.on_device_embedding_config",
}


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


def choose_strategy(config: HandlerConfig, model_type: str, version: tuple[int, int]) -> str:
    """The configuration's strategy (DJL's rule: continuous for llama/mistral with more than one
    slot, else naive; naive for static batches too), gated by what the installed TNX can do.

    An explicit ``rolling_batch_strategy=continuous_batching`` the installed TNX
    cannot do for this architecture is an error; the automatic choice falls back
    to the naive strategy with a warning.
    """
    sup = model_support(model_type, version)
    wanted = config.effective_rolling_batch_strategy(model_type) or NAIVE
    if wanted != CONTINUOUS or supports_continuous_batching(sup, version):
        return wanted
    since = f">= {fmt(sup.continuous_batching_since)}" if sup.continuous_batching_since else "no release"
    message = (f"transformers-neuronx supports continuous batching for {model_type!r} in {since} (installed "
               f"{fmt(version)}; llama needs >= 0.10, mistral >= 0.11)")
    if config.rolling_batch_strategy == CONTINUOUS:
        raise NeuronVersionError(
            f"option.rolling_batch_strategy=continuous_batching: {message}; "
            "use rolling_batch_strategy=naive_rolling_batch"
        )
    logger.warning("%s; using the naive rolling batch", message)
    return NAIVE


def _amp(config: HandlerConfig, model_type: str, version: tuple[int, int]) -> str:
    f32_only = model_support(model_type, version).amp_f32_only
    if config.dtype is None:
        # Neuron's default is fp16, except where TNX's graphs only work in f32 (GPT-NeoX).
        return "f32" if f32_only else "f16"
    amp = _AMP[config.dtype]
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
    from djl_python.config import load_on_device_embedding_config

    options: dict[str, Any] = {}
    if strategy == CONTINUOUS:
        options["continuous_batching"] = batch_size
    if config.quantize == "static_int8":
        # TNX requires amp == dequant_dtype.
        options["quant"] = {"quant_dtype": "s8", "dequant_dtype": amp}
    for key in ("group_query_attention", "attention_layout", "collectives_layout", "cache_layout"):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    for key in ("fuse_qkv", "all_reduce_dtype", "cast_logits_dtype"):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    embedding = load_on_device_embedding_config(config.on_device_embedding_config)
    if embedding is not None:
        unknown = sorted(set(embedding) - {"on_device_embedding"})
        if unknown:
            raise ConfigError([ConfigProblem(
                "option.on_device_embedding_config", config.on_device_embedding_config,
                f"unsupported keys {unknown}; only 'on_device_embedding' (true/false) is accepted "
                "(on-device generation would return token ids, not logits)")])
        options["on_device_embedding"] = bool(embedding.get("on_device_embedding", True))
    return options


def plan_from_config(config: HandlerConfig, model_type: str, hf_config: dict[str, Any], *, tp_degree: int,
                     version: tuple[int, int]) -> NeuronLoadPlan:
    """Derive the plan from the serving configuration (``HandlerConfig``)."""
    sup = model_support(model_type, version)
    batch_size = config.max_rolling_batch_size if config.rolling_batch_enabled else config.batch_size
    n_positions = config.n_positions or default_n_positions(hf_config)
    strategy = choose_strategy(config, model_type, version)
    amp = _amp(config, model_type, version)
    buckets = sorted(config.context_length_estimate or [n_positions])
    kwargs: dict[str, Any] = {"batch_size": batch_size, "amp": amp, "tp_degree": tp_degree}
    if strategy == CONTINUOUS:
        # One token bucket of exactly n_positions: every slot owns a full-length KV row.
        kwargs["n_positions"] = [n_positions]
        kwargs["context_length_estimate"] = buckets
    else:
        kwargs["n_positions"] = n_positions
        if config.context_length_estimate:
            if sup.context_length_estimate:
                kwargs["context_length_estimate"] = buckets
            else:
                logger.warning(
                    "option.context_length_estimate is ignored: transformers-neuronx's %s has no prefill buckets",
                    sup.class_name,
                )
                buckets = [n_positions]
    unroll = _unroll(config)
    if unroll is not None:
        kwargs["unroll"] = unroll
    options = neuron_options_from_config(config, amp=amp, strategy=strategy, batch_size=batch_size)
    return NeuronLoadPlan(model_type, strategy, batch_size, n_positions, buckets, kwargs, options)


def plan_from_optimum_block(block: dict[str, Any], model_type: str, version: tuple[int, int]) -> NeuronLoadPlan:
    """What optimum-neuron v0.0.25 passed to TNX when it exported this folder (see reference §2.2)."""
    missing = [k for k in ("batch_size", "num_cores", "sequence_length", "auto_cast_type") if k not in block]
    if missing:
        raise NeuronVersionError(f"config.json 'neuron' block lacks {missing}; is this an optimum-neuron export?")
    batch, seq = int(block["batch_size"]), int(block["sequence_length"])
    amp = _AMP_FROM_OPTIMUM.get(str(block["auto_cast_type"]), str(block["auto_cast_type"]))
    sup = model_support(model_type, version)
    kwargs: dict[str, Any] = {"batch_size": batch, "amp": amp, "tp_degree": int(block["num_cores"])}
    options: dict[str, Any] = {"fuse_qkv": True}
    if model_type == "llama":
        options["attention_layout"] = "BSH"
    if batch > 1 and supports_continuous_batching(sup, version):
        options["continuous_batching"] = batch
        kwargs.update(n_positions=[seq], context_length_estimate=[seq])
        strategy = CONTINUOUS
    else:
        kwargs["n_positions"] = seq
        strategy = NAIVE
    return NeuronLoadPlan(model_type, strategy, batch, seq, [seq], kwargs, options)
