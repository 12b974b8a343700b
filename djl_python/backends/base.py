"""The one interface every model backend implements.

A backend owns the model and its KV cache and nothing else: it knows nothing of
requests, sampling, stopping or text. The engine talks to it in *slots*.

Invariants (the contract every implementation and the engine rely on):

* A slot id is a KV-cache row in ``range(limits.max_slots)``, exactly what
  transformers-neuronx calls ``seq_ids`` under continuous batching.
* ``prefill(slot_ids, prompts)`` (re)starts each listed slot from position 0 with
  its prompt and returns the logits of each prompt's *last* position, one row per
  slot, in the order given. Slots not listed are left untouched.
* ``decode(slot_ids, last_tokens, positions)`` appends one token per listed slot
  at ``positions[i]`` (0-based: the token's index in the sequence, i.e. the
  sequence length before this call) and returns the next-token logits, one row
  per slot, in the order given. **Every occupied slot** (prefilled and not
  released) is listed in every decode call: transformers-neuronx runs a
  continuous-batching decode on the full batch and writes token 0 at cache
  position 0 of each slot not listed (``base._prepare_for_continuous_batching``,
  aws-neuron/transformers-neuronx 8b01968 .. 1ade6d7), so on Neuron a left-out
  slot would be corrupted. The engine's scheduler decodes every running
  sequence each step; a backend may refuse (``ValueError``) a decode that leaves
  an occupied slot out, and the Neuron continuous-batching backend does.
* ``release(slot_id)`` frees the row; its contents are undefined afterwards.
* ``slot_ids`` passed to one call are distinct and ascending (the engine sorts
  them), so a backend may rely on ascending order (transformers-neuronx does).
* ``positions[i] < limits.n_positions`` always; the engine never runs a
  sequence past ``n_positions`` total tokens.
* Returned logits are a float32 ``torch.Tensor`` of shape ``[n, vocab_size]`` on
  ``self.device``; the engine samples them in place on that device.
* ``decode_and_prefill`` is one engine step: the decode of every running slot,
  then the prefill of the newly admitted ones (none of which is occupied before
  the call, unless a chunk continues it: below). The default makes the two calls in that order; a backend that can
  run both in one forward overrides it, with each part's logits as its own call
  would return them up to float rounding.
* Speculative decoding, when ``limits.speculation_length`` (``k``) is above 0:
  ``speculate(slot, last_token, position)`` has the backend's draft propose ``k - 1``
  tokens after ``last_token`` and the model score all ``k`` at positions
  ``position .. position + k - 1`` in one call; it returns the proposals and the ``k``
  rows of logits (row ``i`` predicts the token after input ``i``). The engine accepts
  a prefix and calls ``accept_speculation(slot, last_token, proposals, accepted, position)``
  with the tokens it kept (1 to ``k``); the slot then holds ``position + len(accepted)``
  tokens, the last accepted one being the next ``last_token``. The engine uses it for
  one running slot at a time, never past ``n_positions``; plain ``decode`` stays valid
  between speculative steps.
* Prefix caching, when ``limits.prefix_cache_rows`` (``C``) is above 0: the backend keeps ``C``
  extra KV rows that no slot owns. ``save_prefix(slot, cache_row, length)`` copies the first
  ``length`` positions of a slot's row into cache row ``cache_row`` (before the slot is released;
  what the row held before is overwritten). ``decode_and_prefill(..., cached=...)`` takes, per
  prompt, ``None`` or ``(cache_row, n)`` with ``0 < n < len(prompt)`` and ``n`` at most what was
  saved there: the slot's row starts with the cache row's first ``n`` positions, and only the
  prompt's tokens from position ``n`` on are computed. Its logits are the prompt's last position's,
  as for a prompt computed whole (up to float rounding). The engine decides what is cached where
  (``engine/prefix_cache.py``); the backend only copies and computes.
* Chunked prefill, when ``limits.can_chunk_prefill``: ``decode_and_prefill(..., starts=...)``
  gives, per prompt, the positions its slot already holds from this prompt's earlier chunks
  (0: a prompt new to its slot). ``prompts[i]`` then runs to the end of this step's chunk, not
  necessarily the prompt's end; where ``starts[i] > 0`` the slot holds at least ``starts[i]``
  positions of it (what lies beyond is overwritten: a draft model catching up after rejected
  proposals), ``starts[i] < len(prompts[i])`` and ``cached[i]`` is None, and only positions
  ``starts[i] ..`` are computed. The logits are those of each chunk's last position. A slot
  whose prompt is not complete is occupied but decodes only once it is (its first token comes
  from the chunk that completes it), so backends that chunk do not require every occupied slot
  in a decode.
* Verification, when ``limits.can_verify``: ``verify(slot, tokens, position)`` feeds ``tokens`` to a
  running slot at positions ``position ..`` in one forward and returns the logits after each of
  them (row ``i`` predicts the token after ``tokens[i]``). The slot then holds what a decode of
  each token in turn would have written; the engine's next call for it gives the position to
  continue from, and what lies beyond that position is never read (speculative decoding with
  proposals the engine makes: ``engine/ngram.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the interface itself needs no torch
    import torch


@dataclass(frozen=True)
class BackendLimits:
    """Static shape of a loaded backend; fixed for its lifetime.

    Attributes:
        max_slots: number of KV-cache rows (``max_rolling_batch_size``).
        n_positions: most tokens (prompt + generated) one sequence may hold.
        prefill_buckets: ascending prompt-length buckets; a prefill pads each prompt
            to its bucket when ``padded_prefill`` is set. The last one is the
            longest prompt accepted by one prefill call.
        vocab_size: width of the logits rows (may exceed the tokenizer's vocab).
        eos_token_ids: ids that end generation unless a request ignores EOS.
        max_prefill_slots: most prompts one ``prefill`` call may take (the naive
            Neuron strategy re-prefills everything, continuous batching any
            number); the scheduler never exceeds it.
        speculation_length: tokens one speculative step scores (``k``; 0: no speculation).
        prefix_cache_rows: KV rows kept for cached prefixes (0: no prefix caching).
        can_verify: whether :meth:`Backend.verify` scores several tokens of a running slot at once.
        can_chunk_prefill: whether ``decode_and_prefill`` continues prompts begun in an earlier
            step (``starts``: chunked prefill).
        padded_prefill: whether a prefill pays for each prompt's whole bucket
            (Neuron's compiled shapes) rather than about its real tokens (the
            PyTorch backend: packed prompts, or length groups with bounded
            padding); what :meth:`prefill_cost` charges.
        prefill_budget: prompt tokens per engine step this backend runs best at, the
            scheduler's budget when the configuration sets none (None: the scheduler's
            own default).
    """

    max_slots: int
    n_positions: int
    prefill_buckets: tuple[int, ...]
    vocab_size: int
    eos_token_ids: tuple[int, ...] = ()
    max_prefill_slots: int | None = None
    padded_prefill: bool = True
    speculation_length: int = 0
    prefix_cache_rows: int = 0
    can_verify: bool = False
    can_chunk_prefill: bool = False
    prefill_budget: int | None = None

    def __post_init__(self) -> None:
        if self.max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {self.max_slots}")
        if self.prefill_budget is not None and self.prefill_budget < 1:
            raise ValueError(f"prefill_budget must be >= 1, got {self.prefill_budget}")
        if self.n_positions < 2:
            raise ValueError(f"n_positions must be >= 2, got {self.n_positions}")
        if not self.prefill_buckets or list(self.prefill_buckets) != sorted(set(self.prefill_buckets)):
            raise ValueError(f"prefill_buckets must be ascending and distinct, got {self.prefill_buckets}")
        if self.prefill_buckets[-1] > self.n_positions:
            raise ValueError(
                f"largest prefill bucket {self.prefill_buckets[-1]} exceeds n_positions {self.n_positions}"
            )

    @property
    def max_prompt_len(self) -> int:
        """Longest prompt a single prefill accepts."""
        return self.prefill_buckets[-1]

    def prefill_cost(self, length: int) -> int:
        """Tokens of work a prompt of ``length`` tokens adds to a prefill: its bucket when
        prefills are padded, else ``length``. ValueError past the largest bucket."""
        bucket = self.bucket_for(length)
        return bucket if self.padded_prefill else length

    def bucket_for(self, length: int) -> int:
        """Smallest prefill bucket that holds ``length`` tokens.

        Raises ValueError when no bucket is large enough.
        """
        for bucket in self.prefill_buckets:
            if length <= bucket:
                return bucket
        raise ValueError(f"prompt of {length} tokens exceeds the largest prefill bucket {self.prefill_buckets[-1]}")


@dataclass
class BackendInfo:
    """What a backend reports about itself for logs, ``/info`` and metrics."""

    name: str  # "pytorch" or "neuron"
    device: str  # "cpu", "cuda:0", "neuron"
    model_type: str
    dtype: str
    extra: dict[str, object] = field(default_factory=dict)


class Backend(ABC):
    """A loaded model with a fixed number of KV-cache slots. See the module docstring."""

    limits: BackendLimits
    info: BackendInfo

    @abstractmethod
    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> "torch.Tensor":
        """Start each slot with its prompt; return last-position logits ``[n, vocab]``."""

    @abstractmethod
    def decode(
        self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]
    ) -> "torch.Tensor":
        """Append one token per slot at its position; return next-token logits ``[n, vocab]``."""

    def speculate(self, slot_id: int, last_token: int, position: int) -> "tuple[list[int], torch.Tensor]":
        """The draft's ``k - 1`` proposals after ``last_token`` and the model's ``[k, vocab]`` logits
        (module docstring); only when ``limits.speculation_length`` is above 0."""
        raise NotImplementedError(f"{type(self).__name__} has no speculative decoding")

    def accept_speculation(self, slot_id: int, last_token: int, proposals: Sequence[int], accepted: Sequence[int],
                           position: int) -> None:
        """Record that ``accepted`` (1 to ``k`` tokens) follow ``last_token`` at ``position``."""
        raise NotImplementedError(f"{type(self).__name__} has no speculative decoding")

    def verify(self, slot_id: int, tokens: Sequence[int], position: int) -> "torch.Tensor":
        """Feed ``tokens`` to a running slot from ``position`` in one forward; ``[len(tokens), vocab]``
        logits (module docstring); only when ``limits.can_verify``."""
        raise NotImplementedError(f"{type(self).__name__} cannot verify speculated tokens")

    def save_prefix(self, slot_id: int, cache_row: int, length: int) -> None:
        """Copy the first ``length`` positions of the slot's row into cache row ``cache_row`` (module
        docstring); only when ``limits.prefix_cache_rows`` is above 0."""
        raise NotImplementedError(f"{type(self).__name__} has no prefix cache")

    def decode_and_prefill(
        self, decode_slots: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int],
        prefill_slots: Sequence[int], prompts: Sequence[Sequence[int]],
        cached: "Sequence[tuple[int, int] | None] | None" = None, starts: "Sequence[int] | None" = None,
    ) -> "tuple[torch.Tensor | None, torch.Tensor | None]":
        """One step: ``decode(decode_slots, ...)`` then ``prefill(prefill_slots, prompts)``, either
        part skipped (``None`` in its place) when its slots are empty. ``cached``: each prompt's
        cached prefix; ``starts``: each prompt's positions from earlier chunks (module docstring).
        A backend without a prefix cache or chunked prefill never gets them."""
        if cached is not None and any(c is not None for c in cached):
            raise NotImplementedError(f"{type(self).__name__} has no prefix cache")
        if starts is not None and any(starts):
            raise NotImplementedError(f"{type(self).__name__} has no chunked prefill")
        decoded = self.decode(decode_slots, last_tokens, positions) if decode_slots else None
        prefilled = self.prefill(prefill_slots, prompts) if prefill_slots else None
        return decoded, prefilled

    @abstractmethod
    def release(self, slot_id: int) -> None:
        """Free a slot. Idempotent."""
