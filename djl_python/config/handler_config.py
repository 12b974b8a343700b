"""``HandlerConfig``: the one immutable configuration the handler runs on.

It merges the common LMI properties and the Transformers-NeuronX properties
and adds the rules that span both (``amp`` vs ``dtype``, the rolling-batch
strategy default). Field names are the LMI keys without ``option.``.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import ConfigDict, PrivateAttr, model_validator

from djl_python.config.errors import FieldConflict
from djl_python.config.fields import AMP_ALIASES, DTYPE_TO_AMP, parse_bool, parse_dtype
from djl_python.config.lmi import LmiProperties
from djl_python.config.serving import ServingProperties
from djl_python.config.tnx import TnxProperties

# Model types whose Transformers-NeuronX classes support continuous batching.
CONTINUOUS_BATCHING_MODEL_TYPES = frozenset({"llama", "mistral"})

# Input-only keys: accepted, folded into a field, never stored (key -> meaning).
INPUT_ONLY_KEYS: dict[str, str] = {
    "amp": "Transformers-NeuronX spelling of `dtype` (`f32`, `f16`, `bf16`); must agree with `dtype` "
    "when both are set. Read back as the derived property `config.amp`.",
    "load_in_8bit": "`true` is a synonym of `quantize=static_int8`; `false` with `quantize=static_int8` is an error. "
    "Read back as the derived property `config.load_in_8bit`.",
}


def _fold_amp(data: dict[str, Any]) -> dict[str, Any]:
    raw_amp = data.pop("amp")
    if raw_amp is None or not str(raw_amp).strip():
        return data
    amp_dtype = AMP_ALIASES.get(str(raw_amp).strip().lower())
    if amp_dtype is None:
        raise FieldConflict(("amp",), "{amp}={value!r} must be one of f32, f16, bf16", value=raw_amp)
    try:
        dtype = parse_dtype(data.get("dtype"))
    except ValueError:
        return data  # the dtype field reports its own error
    if dtype is None:
        data["dtype"] = amp_dtype
    elif dtype != amp_dtype:
        raise FieldConflict(
            ("amp", "dtype"),
            "{amp}={amp_value} contradicts {dtype}={dtype_value}; amp is derived from dtype, set only dtype",
            amp_value=raw_amp,
            dtype_value=data.get("dtype"),
        )
    return data


def _fold_load_in_8bit(data: dict[str, Any]) -> dict[str, Any]:
    raw = data.pop("load_in_8bit")
    try:
        wanted = parse_bool(raw) if raw is not None and str(raw).strip() else None
    except ValueError:
        raise FieldConflict(("load_in_8bit",), "{load_in_8bit}={value!r} must be true or false", value=raw) from None
    quantize = str(data.get("quantize") or "").strip().lower()
    if wanted and not quantize:
        data["quantize"] = "static_int8"
    elif wanted is False and quantize == "static_int8":
        raise FieldConflict(
            ("load_in_8bit", "quantize"), "{load_in_8bit}=false contradicts {quantize}=static_int8; set only quantize"
        )
    return data


class HandlerConfig(ServingProperties, TnxProperties, LmiProperties):
    """Validated, immutable handler configuration.

    Invariants once constructed: every enumerated option holds its canonical
    spelling; ``batch_size > 1`` implies ``rolling_batch == "disable"``;
    ``context_length_estimate`` is ascending and fits ``n_positions``;
    ``model_loader`` and ``partition_schema`` agree. Build it with
    ``djl_python.config.load_config`` to get errors that name keys as written.
    """

    # Field order (used by the docs) is LMI first, then Transformers-NeuronX:
    # pydantic collects fields from the most basic class of the MRO upwards.
    model_config = ConfigDict(frozen=True, extra="ignore")
    # field -> the key as the user wrote it (``--max-num-seqs``, ``option.n_positions``,
    # ``OPTION_DTYPE``); set once by ``validate_options``, kept by ``model_copy``.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        """Equal values are equal configurations, however they were written."""
        if not isinstance(other, HandlerConfig):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.__dict__.items())))

    def origin(self, field: str) -> str:
        """How the user wrote ``field`` (``option.<field>`` when it was not set)."""
        return self._origins.get(field, f"option.{field}")

    @model_validator(mode="before")
    @classmethod
    def _fold_input_only_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not INPUT_ONLY_KEYS.keys() & data.keys():
            return data
        data = dict(data)
        if "amp" in data:
            data = _fold_amp(data)
        if "load_in_8bit" in data:
            data = _fold_load_in_8bit(data)
        return data

    def with_compiled_settings(self, adopted: Mapping[str, Any]) -> HandlerConfig:
        """This configuration with the settings adopted from compiled artifacts
        (``ModelArtifacts.adopted``: the options it left unset, as the compiled model has them).

        The one place adopted settings merge: ``backends.dispatch.load_backend`` calls it before
        either backend reads the shape (``max_slots``, ``n_positions``, ``dtype``,
        ``tensor_parallel_degree``). Keys are option names already checked against the
        compiled values by the artifacts layer; the origins of what the user wrote are kept.
        """
        unknown = set(adopted) - set(type(self).model_fields)
        if unknown:
            raise ValueError(f"adopted settings name no option: {sorted(unknown)}")
        return self.model_copy(update=dict(adopted)) if adopted else self

    @property
    def amp(self) -> str | None:
        """Transformers-NeuronX ``amp`` (``f32``/``f16``/``bf16``) derived from
        ``dtype``; None when ``dtype`` is left to the backend default."""
        return DTYPE_TO_AMP[self.dtype] if self.dtype else None

    def effective_rolling_batch_strategy(self, model_type: str) -> str | None:
        """The batching strategy for a model of ``model_type``.

        None when rolling batch is disabled; the configured strategy when set;
        otherwise ``continuous_batching`` for llama/mistral with more than one
        slot and ``naive_rolling_batch`` for everything else.
        """
        if not self.rolling_batch_enabled:
            return None
        if self.rolling_batch_strategy is not None:
            return self.rolling_batch_strategy
        if model_type.lower() in CONTINUOUS_BATCHING_MODEL_TYPES and self.max_rolling_batch_size > 1:
            return "continuous_batching"
        return "naive_rolling_batch"
