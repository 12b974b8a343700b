"""Requests, their parameters, their life cycle and what the engine reports for them.

No torch here: these types cross the boundary between the API layer
(``djl_python.api``), the scheduler and the engine loop. The engine has its own
vocabulary: ``FinishReason`` says why a request ended, and each API renders it
in its own words (``djl_python.api.finish``); the prompt is called ``prompt``
in ``InvalidRequest`` and each API renames it to its own field.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from djl_python.engine.constraint import Constraint
from djl_python.engine.errors import InvalidRequest

__all__ = ["Constraint", "InvalidRequest"]  # re-exported: the request vocabulary in one import


# Numeric floors that keep the sampler finite (float32 logits of magnitude <= ~1e3):
# logits / 1e-5 and logits / 0.01 or * 100 stay far below float32's 3.4e38.
GREEDY_TEMPERATURE = 1e-5  # a lower (non-zero) temperature decodes greedily
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 100.0


class RequestStatus(enum.IntEnum):
    """Life cycle of a request. Every value above RUNNING is terminal.

    The order matters: ``status > RequestStatus.RUNNING`` means finished.
    """

    WAITING = 0
    RUNNING = 1
    FINISHED_EOS = 2
    FINISHED_STOP_SEQUENCE = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5
    FINISHED_ERROR = 6

    @property
    def finished(self) -> bool:
        return self > RequestStatus.RUNNING

    @property
    def finish_reason(self) -> Optional["FinishReason"]:
        return _FINISH_REASONS.get(self)


class FinishReason(str, enum.Enum):
    """Why a request ended, in the engine's words. A ``str`` enum whose ``str()`` and
    ``format()`` give its value, as ``enum.StrEnum`` does (which needs Python 3.11; the LMI
    Neuron images run 3.9 and 3.10), so it compares and serialises as its value; the APIs map it
    to their own spellings (``api/finish.py``)."""

    __str__ = str.__str__
    __format__ = str.__format__

    EOS = "eos_token"  # an EOS id or one of the request's stop_token_ids
    STOP_SEQUENCE = "stop_sequence"  # a stop string matched the text
    LENGTH = "length"  # max_new_tokens or n_positions reached
    ABORT = "abort"  # the caller aborted it
    ERROR = "error"  # sampling/detokenising it failed, or the engine was reset


_FINISH_REASONS = {
    RequestStatus.FINISHED_EOS: FinishReason.EOS,
    RequestStatus.FINISHED_STOP_SEQUENCE: FinishReason.STOP_SEQUENCE,
    RequestStatus.FINISHED_LENGTH: FinishReason.LENGTH,
    RequestStatus.FINISHED_ABORTED: FinishReason.ABORT,
    RequestStatus.FINISHED_ERROR: FinishReason.ERROR,
}


def knob(description: str) -> Any:
    """Declare a sampling knob: a ``SamplingParams`` field that is ``None`` unless set, that every
    API accepts under its name, and that a model's ``generation_config.json`` may default.

    This is the one declaration (:mod:`djl_python.engine.knobs` reads it): the API schemas, the
    generation-config reader and the DJL body coercion all derive their knob lists from it, and
    :func:`djl_python.engine.knobs.resolve_knobs` applies request > model > API default to it.
    """
    return field(default=None, metadata={"knob": description})


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation parameters, validated on construction.

    The engine's own default for ``max_new_tokens`` serves offline ``generate``
    only: every API sets it from its own default (``djl_python.api``).

    A sampling knob (declared with :func:`knob`) left ``None`` means "the model's
    generation_config.json default, else the API's default, else the neutral value"
    (:func:`djl_python.engine.knobs.resolve_knobs`). ``do_sample=False`` (or temperature 0)
    is greedy decoding, which has its own fast path.
    """

    max_new_tokens: int = 30
    do_sample: bool = False
    temperature: Optional[float] = knob("divides the logits of sampled rows; 0 is greedy")
    top_k: Optional[int] = knob("keep the k most likely tokens (0 disables)")
    top_p: Optional[float] = knob("keep the smallest set of tokens whose probability reaches p")
    typical_p: Optional[float] = knob("locally typical sampling: keep tokens whose surprise is typical, up to mass p")
    repetition_penalty: Optional[float] = knob("divides positive (multiplies negative) logits of seen tokens")
    # vLLM's: drop tokens whose probability is below min_p times the top token's (sampled rows).
    min_p: Optional[float] = knob("drop tokens below min_p times the most likely token's probability")
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    # vLLM's: no EOS / stop id / stop sequence ends the request before min_tokens tokens; special
    # tokens' text is left out of the output unless skip_special_tokens is False.
    min_tokens: int = 0
    skip_special_tokens: bool = True
    # The output must match this (engine/grammar.py): a token mask in the sampler, every backend.
    constraint: Optional[Constraint] = None

    def __post_init__(self) -> None:
        def bad(name: str, message: str) -> None:
            raise InvalidRequest(name, message)

        # Every number must be a finite int/float first: NaN compares false with every bound, so a
        # range check alone would let it through to the sampler.
        for name in ("temperature", "top_p", "typical_p", "repetition_penalty", "presence_penalty",
                     "frequency_penalty"):
            value = getattr(self, name)
            if value is None and name not in ("presence_penalty", "frequency_penalty"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(name, f"must be a finite number, got {value!r}")
        for name in ("top_k", "seed", "top_logprobs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                bad(name, f"must be an integer, got {value!r}")
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens <= 0:
            bad("max_new_tokens", f"must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature is not None and not (0.0 <= self.temperature <= 100.0):
            bad("temperature", f"must be in [0, 100], got {self.temperature!r}")
        if self.top_k is not None and self.top_k < 0:
            bad("top_k", f"must be >= 0 (0 disables it), got {self.top_k!r}")
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            bad("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if self.typical_p is not None and not (0.0 < self.typical_p <= 1.0):
            bad("typical_p", f"must be in (0, 1], got {self.typical_p!r}")
        if self.repetition_penalty is not None and not (
                MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY):
            bad("repetition_penalty", f"must be in [{MIN_REPETITION_PENALTY:g}, {MAX_REPETITION_PENALTY:g}], "
                f"got {self.repetition_penalty!r}")
        if not (-2.0 <= self.presence_penalty <= 2.0):
            bad("presence_penalty", f"must be in [-2, 2], got {self.presence_penalty!r}")
        if not (-2.0 <= self.frequency_penalty <= 2.0):
            bad("frequency_penalty", f"must be in [-2, 2], got {self.frequency_penalty!r}")
        if self.seed is not None and not (0 <= self.seed < 2**63):
            bad("seed", f"must be a non-negative 63-bit integer, got {self.seed!r}")
        if any((not isinstance(s, str)) or s == "" for s in self.stop):
            bad("stop", "stop sequences must be non-empty strings")
        if len(self.stop) > 16:
            bad("stop", f"at most 16 stop sequences, got {len(self.stop)}")
        if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < 2**31 for t in self.stop_token_ids):
            bad("stop_token_ids", "token ids must be integers in [0, 2^31)")
        if not (0 <= self.top_logprobs <= 20):
            bad("top_logprobs", f"must be in [0, 20], got {self.top_logprobs!r}")
        if self.min_p is not None and not (0.0 <= self.min_p <= 1.0):
            bad("min_p", f"must be in [0, 1], got {self.min_p!r}")
        if not isinstance(self.min_tokens, int) or isinstance(self.min_tokens, bool) or self.min_tokens < 0:
            bad("min_tokens", f"must be a non-negative integer, got {self.min_tokens!r}")
        elif self.min_tokens and self.constraint is not None:
            bad("min_tokens", "cannot be combined with an output constraint: its grammar decides where the output ends")
        elif self.min_tokens > self.max_new_tokens:
            bad("min_tokens", f"must be <= the maximum number of new tokens ({self.max_new_tokens}), "
                f"got {self.min_tokens}")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax of the (penalised) logits.

        A temperature below ``GREEDY_TEMPERATURE`` is greedy too: dividing logits by it would
        overflow to ``inf`` and the softmax to NaN, and the distribution is one-hot anyway.
        """
        return not self.do_sample or (self.temperature is not None and self.temperature < GREEDY_TEMPERATURE)


@dataclass
class RequestOutput:
    """What one engine step produced for one request.

    ``text`` is the *new* text since the previous output (a delta): text that
    could still turn into a stop sequence, and incomplete UTF-8 characters, are
    held back, so the concatenation of all deltas is the final text. The final
    output (``finished``) flushes whatever was held back (minus a matched stop
    sequence).

    When the request asked for log-probs, ``token_texts[i]`` is the text of
    ``token_ids[i]`` decoded on its own and ``top_logprob_texts[i]`` names the
    ids of ``top_logprobs[i]``: both are decoded here, on the engine thread, so
    no API layer or route needs the tokenizer to render log-probs.
    """

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool = False
    finish_reason: Optional[FinishReason] = None
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    top_logprob_texts: list[dict[int, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    error: Optional[str] = None
