"""One request inside the engine: its tokens, its slot and its life cycle.

A ``Sequence`` is the engine's private view of a request (the serving layer
only ever sees ``RequestOutput``). It is plain Python, like everything the
scheduler touches, so scheduling can be tested without a model.

Invariants:

* ``prompt_ids`` is never empty and ``len(prompt_ids) + max_tokens <= n_positions``
  (the engine clamps ``max_tokens`` on admission), so a running sequence always
  has room for the token it is about to decode.
* ``slot`` is set exactly while the status is RUNNING.
* ``num_tokens - 1`` is the position of ``last_token``; it is what ``decode``
  receives as ``positions[i]``.
* ``prefilled <= prompt_len``: the prompt positions whose KV the slot holds. A prompt may be
  prefilled in chunks over several steps (chunked prefill); the step that completes it samples
  the first token, so a sequence with output tokens has ``prefilled == prompt_len``.
  ``prefill_end`` is where the chunk the scheduler gave it this step ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from djl_python.engine.request import RequestStatus, SamplingParams

if TYPE_CHECKING:
    from djl_python.engine.detokenizer import IncrementalDetokenizer
    from djl_python.engine.grammar import GrammarMatcher
    from djl_python.engine.stopping import StopChecker


@dataclass(eq=False)
class Sequence:
    """Mutable per-request state; owned by the engine, scheduled by the scheduler."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int  # max_new_tokens clamped to the room left in n_positions
    detokenizer: "IncrementalDetokenizer"
    stop_checker: "StopChecker"
    output_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    slot: Optional[int] = None
    matcher: Optional["GrammarMatcher"] = None  # set exactly when params.constraint is
    prefilled: int = 0  # prompt positions in the slot's KV (engine, after each prefill chunk)
    prefill_end: int = 0  # the end of this step's prefill chunk (scheduler)
    # While waiting (scheduler; meaningless once admitted): the prefill cost of the prompt tokens to
    # compute as of arrival (its order under shortest_prompt_first), and how many later requests
    # were admitted before it.
    queue_cost: int = 0
    overtaken: int = 0
    # Speculation's back-off (any proposer): steps to decode plainly before proposing again, and twice the
    # wait the next miss brings (doubled after each step whose proposals all missed, reset by a hit).
    speculation_wait: int = 0
    speculation_backoff: int = 0

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_generated(self) -> int:
        return len(self.output_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def prefill_done(self) -> bool:
        return self.prefilled == len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.status.finished
