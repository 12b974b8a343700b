"""The one dtype table: every spelling of a model precision, and its name in each dialect.

LMI's short names (``fp32``, ``fp16``, ``bf16``) are canonical. Transformers-NeuronX
calls them ``amp`` (``f32``, ``f16``, ``bf16``); torch and the Neuron compiler use
the long names (``float32``...; ``getattr(torch, Dtype.long)`` is the torch dtype).
Other modules derive their maps from ``DTYPES`` instead of writing their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Dtype:
    name: str  # LMI / HandlerConfig.dtype
    amp: str  # transformers-neuronx ``amp``
    long: str  # torch attribute, compiler flags, optimum-neuron ``auto_cast_type`` long form
    itemsize: int  # bytes per element


DTYPES: tuple[Dtype, ...] = (Dtype("fp32", "f32", "float32", 4), Dtype("fp16", "f16", "float16", 2),
                             Dtype("bf16", "bf16", "bfloat16", 2))
BY_NAME: dict[str, Dtype] = {d.name: d for d in DTYPES}
# Every accepted spelling (lower case) -> the canonical name.
SPELLINGS: dict[str, str] = {s: d.name for d in DTYPES for s in (d.name, d.amp, d.long)}


def canonical(spelling: Optional[str]) -> Optional[str]:
    """``fp32``/``fp16``/``bf16`` for any spelling; None for None or an unknown one."""
    return None if spelling is None else SPELLINGS.get(str(spelling).strip().lower())


def amp(spelling: str) -> str:
    """transformers-neuronx's ``amp`` for any known spelling; an unknown one passes through."""
    name = canonical(spelling)
    return BY_NAME[name].amp if name else spelling
