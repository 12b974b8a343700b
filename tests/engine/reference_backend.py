"""An exact, slow ``Backend`` for tests: every call recomputes each slot's whole sequence.

No KV cache, no padding, no batching: row ``i`` of the logits is
``model(sequence_i).logits[-1]`` for the slot's full token sequence, so it is
correct by construction and serves as the reference an optimised backend (and
the engine) is compared with. Tiny models only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM

from djl_python.backends.base import Backend, BackendInfo, BackendLimits


class ReferenceBackend(Backend):
    def __init__(
        self, model_dir: Path, *, max_slots: int = 4, n_positions: int = 128, buckets: tuple[int, ...] = (32, 64)
    ) -> None:
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        config = self.model.config
        eos = self.model.generation_config.eos_token_id
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        self.limits = BackendLimits(max_slots, n_positions, buckets, config.vocab_size, eos_ids)
        self.info = BackendInfo("reference", "cpu", config.model_type, "fp32")
        self.rows: dict[int, list[int]] = {}

    @torch.no_grad()
    def _last_logits(self, slot_ids: Sequence[int]) -> torch.Tensor:
        rows = [self.model(torch.tensor([self.rows[s]])).logits[0, -1].float() for s in slot_ids]
        return torch.stack(rows)

    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        for slot, prompt in zip(slot_ids, prompts):
            self.rows[slot] = list(prompt)
        return self._last_logits(slot_ids)

    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        for slot, token, pos in zip(slot_ids, last_tokens, positions):
            if pos != len(self.rows[slot]):
                raise AssertionError(f"slot {slot}: position {pos} but {len(self.rows[slot])} tokens held")
            self.rows[slot].append(token)
        return self._last_logits(slot_ids)

    def release(self, slot_id: int) -> None:
        self.rows.pop(slot_id, None)
