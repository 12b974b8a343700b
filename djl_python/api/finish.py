"""Each API's words for the engine's ``FinishReason``."""

from __future__ import annotations

from typing import Optional

from djl_python.engine.request import FinishReason

LMI = {r: r.value for r in FinishReason}  # LMI's spellings are the engine's values
OPENAI = {
    FinishReason.EOS: "stop",
    FinishReason.STOP_SEQUENCE: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.ABORT: "abort",
    FinishReason.ERROR: "error",
}
# TGI's FinishReason has only length, eos_token and stop_sequence.
TGI = {
    FinishReason.EOS: "eos_token",
    FinishReason.STOP_SEQUENCE: "stop_sequence",
    FinishReason.LENGTH: "length",
    FinishReason.ABORT: "length",
    FinishReason.ERROR: "length",
}


def openai(reason: Optional[FinishReason]) -> Optional[str]:
    return None if reason is None else OPENAI[FinishReason(reason)]


def tgi(reason: Optional[FinishReason]) -> str:
    return TGI[FinishReason(reason or FinishReason.LENGTH)]
