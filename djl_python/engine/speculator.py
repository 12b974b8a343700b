"""The speculative step: up to ``k`` tokens for the one running plain greedy sequence from one
backend call.

Two sources of speculation (which one runs follows from the backend's limits and the lengths
given at construction):

* **The backend's own** (``limits.speculation_length > 0``: Neuron's compiled draft):
  ``Backend.speculate`` proposes and scores in one call, and ``accept_speculation`` tells it
  what was kept.
* **A proposer's** (``engine/proposers.py``: prompt lookup or a draft model), on a backend that
  scores proposals (``limits.can_verify``): ``Backend.verify`` scores them in one forward. A
  proposer that keeps missing (prompt lookup or draft) backs off: after a second miss in a row
  the sequence decodes plainly for a while, twice as long after each further miss (up to
  ``MAX_SPECULATION_BACKOFF`` steps), and a hit resets it, since a verify is wider than a decode.

Either way the tokens kept are the longest prefix greedy decoding would produce
(``engine/speculation.py``), so output equals plain decoding. The engine appends them and applies
stop criteria token by token. A backend exception propagates (the engine's caller resets it).

No torch at import (the argmax comes from ``engine/sampling.py``, imported when a step runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from djl_python.engine.proposers import DraftProposer, NgramProposer, Proposer
from djl_python.engine.sequence import Sequence
from djl_python.engine.speculation import accept_greedy, speculable

if TYPE_CHECKING:
    from djl_python.backends.base import Backend

MAX_SPECULATION_BACKOFF = 32  # plain steps at most between two proposals that keep missing


class Speculator:
    """Speculative steps for one engine; see the module docstring. Called from the engine's thread."""

    def __init__(self, backend: "Backend", ngram_length: int = 0, draft: "Backend | None" = None,
                 draft_length: int = 0) -> None:
        """``ngram_length`` / ``draft_length``: tokens one verified step scores with prompt-lookup or
        draft proposals (0: off; ValueError for 1 or less than 0, for both at once, or for a draft
        with fewer slots than the backend). Ignored where the backend cannot verify."""
        for name, length in (("ngram_length", ngram_length), ("draft_length", draft_length)):
            if length < 0 or length == 1:
                raise ValueError(f"{name} must be 0 (off) or at least 2, got {length}")
        if ngram_length and draft is not None:
            raise ValueError("speculate with n-gram proposals or a draft model, not both")
        if draft is not None and draft.limits.max_slots < backend.limits.max_slots:
            raise ValueError(f"the draft has {draft.limits.max_slots} slots, the model {backend.limits.max_slots}")
        self.backend = backend
        # Tokens one verified speculative step scores, and who proposes all but the first of them.
        self.proposer: Optional[Proposer] = None
        self.length = 0
        if backend.limits.can_verify and ngram_length:
            self.proposer, self.length = NgramProposer(), ngram_length
        elif backend.limits.can_verify and draft is not None and draft_length:
            self.proposer, self.length = DraftProposer(draft), draft_length

    @property
    def ngram_length(self) -> int:
        """Tokens one n-gram speculative step scores (0: no n-gram speculation)."""
        return self.length if isinstance(self.proposer, NgramProposer) else 0

    def can_run(self, seq: Sequence) -> bool:
        """The backend speculates or a proposer is set, ``seq`` is plain greedy, and all ``k``
        positions fit in ``n_positions``."""
        limits = self.backend.limits
        k = limits.speculation_length or self.length
        return k > 0 and speculable(seq.params) and seq.num_tokens - 1 + k <= limits.n_positions

    def run(self, seq: Sequence) -> Optional[list[int]]:
        """The tokens one speculative step keeps for ``seq`` (1 to ``k``), not yet appended; None
        when there was nothing to propose (a back-off, or no recurring suffix) and nothing ran."""
        from djl_python.engine.sampling import greedy_tokens

        slot, last, position = seq.slot, seq.last_token, seq.num_tokens - 1
        if slot is None:  # only a running sequence (which holds a slot) speculates
            return None
        if self.backend.limits.speculation_length:
            proposals, logits = self.backend.speculate(slot, last, position)
            accepted = accept_greedy(proposals, greedy_tokens(logits))
            self.backend.accept_speculation(slot, last, proposals, accepted, position)
            return accepted
        if self.proposer is None:
            return None
        if seq.speculation_wait:
            seq.speculation_wait -= 1
            return None
        proposals = self.proposer.propose(seq, self.length - 1)
        if not proposals:
            return None
        logits = self.backend.verify(slot, [last, *proposals], position)
        accepted = accept_greedy(proposals, greedy_tokens(logits))
        self.proposer.kept(seq, proposals, accepted)
        hit = len(accepted) > 1
        seq.speculation_backoff = 0 if hit else min(max(1, 2 * seq.speculation_backoff), 2 * MAX_SPECULATION_BACKOFF)
        seq.speculation_wait = seq.speculation_backoff // 2
        return accepted

    def release(self, slot: int) -> None:
        """The sequence in ``slot`` ended: its proposer forgets it. Idempotent."""
        if self.proposer is not None:
            self.proposer.release(slot)
