"""A model-free ``Backend`` for engine tests: deterministic logits, strict contract checks.

Its logits are a pure function of each slot's token sequence (a pseudo-random
vector seeded by the sequence, or a peak at ``rule(sequence)``), so a request's
tokens never depend on its batch neighbours, exactly as with a real model.
Every call checks what ``djl_python.backends.base`` promises the backend.
"""

from __future__ import annotations

import zlib
from typing import Callable, Optional, Sequence

import torch

from djl_python.backends.base import Backend, BackendInfo, BackendLimits


class ContractError(AssertionError):
    """The engine broke the Backend contract."""


class FakeBackend(Backend):
    def __init__(
        self,
        *,
        max_slots: int = 4,
        n_positions: int = 64,
        prefill_buckets: tuple[int, ...] = (16, 32),
        vocab_size: int = 512,
        eos_token_ids: tuple[int, ...] = (2,),
        max_prefill_slots: Optional[int] = None,
        rule: Optional[Callable[[list[int]], int]] = None,
    ) -> None:
        self.limits = BackendLimits(
            max_slots, n_positions, prefill_buckets, vocab_size, eos_token_ids, max_prefill_slots
        )
        self.info = BackendInfo("fake", "cpu", "fake", "fp32")
        self.rule = rule
        self.rows: dict[int, list[int]] = {}  # slot -> every token it holds
        self.calls: list[tuple[str, list[int]]] = []  # ("prefill" | "decode", slot ids)
        self.released: list[int] = []
        self.fail_next: Optional[Exception] = None

    def logits_for(self, seq: Sequence[int]) -> torch.Tensor:
        vocab = self.limits.vocab_size
        if self.rule is not None:
            row = torch.full((vocab,), -10.0)
            row[self.rule(list(seq))] = 10.0
            return row
        gen = torch.Generator().manual_seed(zlib.crc32(bytes(str(list(seq)), "ascii")))
        return torch.randn(vocab, generator=gen) * 3.0

    def _check_slots(self, slot_ids: Sequence[int]) -> None:
        if list(slot_ids) != sorted(set(slot_ids)):
            raise ContractError(f"slot ids not ascending and distinct: {slot_ids}")
        if any(not 0 <= s < self.limits.max_slots for s in slot_ids):
            raise ContractError(f"slot id out of range: {slot_ids}")

    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        self._raise_if_asked()
        self._check_slots(slot_ids)
        if self.limits.max_prefill_slots and len(slot_ids) > self.limits.max_prefill_slots:
            raise ContractError(f"{len(slot_ids)} prompts in one prefill > max_prefill_slots")
        for slot, prompt in zip(slot_ids, prompts):
            if not 0 < len(prompt) <= self.limits.max_prompt_len:
                raise ContractError(f"prompt length {len(prompt)}")
            self.rows[slot] = list(prompt)
        self.calls.append(("prefill", list(slot_ids)))
        return torch.stack([self.logits_for(self.rows[s]) for s in slot_ids])

    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        self._raise_if_asked()
        self._check_slots(slot_ids)
        for slot, token, pos in zip(slot_ids, last_tokens, positions):
            if slot not in self.rows:
                raise ContractError(f"decode of empty slot {slot}")
            if pos != len(self.rows[slot]) or pos >= self.limits.n_positions:
                raise ContractError(f"slot {slot}: position {pos}, holds {len(self.rows[slot])}")
            self.rows[slot].append(token)
        self.calls.append(("decode", list(slot_ids)))
        return torch.stack([self.logits_for(self.rows[s]) for s in slot_ids])

    def release(self, slot_id: int) -> None:
        self.rows.pop(slot_id, None)
        self.released.append(slot_id)

    def _raise_if_asked(self) -> None:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
