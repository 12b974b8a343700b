"""Who proposes the tokens a speculative step verifies: prompt lookup, or a draft model.

A speculative step for one running, plain greedy sequence asks its proposer for up to ``k - 1``
tokens after the sequence's last one, has the model score them with ``Backend.verify`` in one
forward, and keeps the longest prefix greedy decoding would have produced
(``engine/speculation.py``), so output equals plain greedy decoding whatever is proposed. The
proposer then hears what was kept, and forgets a sequence when it ends.

* :class:`NgramProposer`: vLLM's ``ngram`` method (``engine/ngram.py``); no model, no state.
* :class:`DraftProposer`: a smaller model with the same vocabulary (vLLM's ``draft_model``, LMI's
  ``speculative_draft_model``), itself a ``Backend`` with the target's slots. Its row for a
  sequence's slot is caught up lazily: the tokens it has not seen (the whole prompt at first, then
  what was decoded since, by other steps or by the target's correction) are fed as a prompt
  continued from what the row holds (``decode_and_prefill(..., starts=...)``), then it decodes
  greedily ``k - 2`` more. After the verification, the row is right up to the last fed token the
  model kept; a later catch-up continues from there and overwrites the rest.

The engine calls a proposer only from its thread. No torch here (the draft's argmax comes from
``engine/sampling.py``, which imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from djl_python.engine.ngram import propose
from djl_python.engine.sequence import Sequence

if TYPE_CHECKING:
    from djl_python.backends.base import Backend


class Proposer(Protocol):
    def propose(self, seq: Sequence, n: int) -> list[int]:
        """Up to ``n`` tokens to follow ``seq``'s last token (none: no speculative step now)."""

    def kept(self, seq: Sequence, proposals: list[int], accepted: list[int]) -> None:
        """``accepted`` (1 to ``len(proposals) + 1`` tokens) follow ``seq``'s tokens as of the proposal."""

    def release(self, slot: int) -> None:
        """The sequence in ``slot`` ended; the slot is about to be reused. Idempotent."""


class NgramProposer:
    """Prompt lookup over the sequence's own tokens (``engine/ngram.py``)."""

    def propose(self, seq: Sequence, n: int) -> list[int]:
        return propose(seq.prompt_ids + seq.output_ids, n)

    def kept(self, seq: Sequence, proposals: list[int], accepted: list[int]) -> None:
        pass

    def release(self, slot: int) -> None:
        pass


class DraftProposer:
    """A draft model's greedy continuation; see the module docstring."""

    def __init__(self, draft: "Backend") -> None:
        self.draft = draft
        self._held: dict[int, int] = {}  # slot -> positions of the sequence's tokens its draft row holds

    def propose(self, seq: Sequence, n: int) -> list[int]:
        from djl_python.engine.sampling import greedy_tokens

        if seq.slot is None or n < 1:
            return []
        tokens = seq.prompt_ids + seq.output_ids
        held = self._held.get(seq.slot, 0)
        starts = [held] if held else None
        logits = self.draft.decode_and_prefill([], [], [], [seq.slot], [tokens], starts=starts)[1]
        proposals = greedy_tokens(logits)
        for i in range(n - 1):
            logits = self.draft.decode([seq.slot], [proposals[-1]], [len(tokens) + i])
            proposals += greedy_tokens(logits)
        self._held[seq.slot] = len(tokens) + n - 1  # the last proposal was never fed
        return proposals

    def kept(self, seq: Sequence, proposals: list[int], accepted: list[int]) -> None:
        if seq.slot is None or seq.slot not in self._held:
            return
        base = seq.num_tokens  # the accepted tokens are not appended yet
        fed = len(proposals) - 1
        right = next((i for i in range(min(fed, len(accepted))) if accepted[i] != proposals[i]), min(fed, len(accepted)))
        self._held[seq.slot] = base + right

    def release(self, slot: int) -> None:
        if self._held.pop(slot, None) is not None:
            self.draft.release(slot)
