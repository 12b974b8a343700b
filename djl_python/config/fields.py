"""Reusable field types for configuration values that arrive as strings.

Every value from ``serving.properties`` or the environment is a string. These
types accept those strings (and native Python values, for programmatic use)
and normalise them; they never touch the environment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, get_args

from pydantic import BeforeValidator, Field

from djl_python.config.dtypes import DTYPES, SPELLINGS

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_bool(value: Any) -> Any:
    """``true/false/1/0/yes/no/on/off`` in any case; other input is left for
    pydantic to reject with its own message."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("must be a boolean: true or false (also 1/0, yes/no, on/off)")
    return value


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value.strip() if isinstance(value, str) else value


def choice(literal: Any, *, optional: bool = False) -> Any:
    """A ``Literal`` of strings matched case-insensitively and returned in its
    canonical spelling (``bsh`` -> ``BSH``). Unknown values are rejected with a
    message listing the allowed ones; with ``optional`` an empty value is None."""
    allowed: tuple[str, ...] = get_args(literal)
    by_folded = {a.lower(): a for a in allowed}

    def normalise(value: Any) -> Any:
        if optional:
            value = _empty_to_none(value)
        if isinstance(value, str):
            canonical = by_folded.get(value.strip().lower())
            if canonical is None:
                raise ValueError(f"must be one of {', '.join(allowed)}")
            return canonical
        return value

    return Annotated[Optional[literal] if optional else literal, BeforeValidator(normalise)]


Bool = Annotated[bool, BeforeValidator(parse_bool)]
def parse_optional_bool(value: Any) -> Any:
    """Like ``parse_bool``; an empty string means unset (None)."""
    return parse_bool(_empty_to_none(value))


OptBool = Annotated[Optional[bool], BeforeValidator(parse_optional_bool)]
OptStr = Annotated[Optional[str], BeforeValidator(_empty_to_none)]
PositiveInt = Annotated[int, Field(ge=1)]
OptPositiveInt = Annotated[Optional[int], BeforeValidator(_empty_to_none), Field(ge=1)]
OptNonNegativeInt = Annotated[Optional[int], BeforeValidator(_empty_to_none), Field(ge=0)]

# Dtype spellings (the one table is ``djl_python.config.dtypes``): LMI's short names are
# canonical; torch-style long names and `auto` (= backend default) are accepted for `dtype`.
DTYPE_ALIASES: dict[str, str | None] = {
    **{s: d.name for d in DTYPES for s in (d.name, d.long)}, "auto": None}
DTYPE_TO_AMP: dict[str, str] = {d.name: d.amp for d in DTYPES}
# `amp` is Transformers-NeuronX's spelling of the same thing.
AMP_ALIASES: dict[str, str] = dict(SPELLINGS)


def parse_dtype(value: Any) -> Any:
    """Normalise a model dtype to ``fp32|fp16|bf16`` or None (backend default)."""
    value = _empty_to_none(value)
    if isinstance(value, str):
        key = value.lower()
        if key not in DTYPE_ALIASES:
            raise ValueError("must be one of fp32, fp16, bf16 (also float32, float16, bfloat16, auto)")
        return DTYPE_ALIASES[key]
    return value


# Compiler-side dtypes keep torch's long spelling, as transformers-neuronx expects.
_LONG_DTYPES = {d.name: d.long for d in DTYPES}


def parse_long_dtype(value: Any) -> Any:
    """Normalise to ``float32|float16|bfloat16`` (short names accepted)."""
    value = _empty_to_none(value)
    if isinstance(value, str):
        short = DTYPE_ALIASES.get(value.lower())
        if short is None:
            raise ValueError("must be one of float32, float16, bfloat16 (also fp32, fp16, bf16)")
        return _LONG_DTYPES[short]
    return value


ModelDtype = Annotated[Optional[Literal["fp32", "fp16", "bf16"]], BeforeValidator(parse_dtype)]
LongDtype = Annotated[Optional[Literal["float32", "float16", "bfloat16"]], BeforeValidator(parse_long_dtype)]

