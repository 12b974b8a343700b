"""Speculative decoding on transformers-neuronx, as LMI 0.28 serves it: a draft model proposes,
the target scores every proposal in one call.

What LMI 0.28-0.29 do (djl-serving v0.28.0, unchanged to afece25d):

* the target gets ``enable_speculative_decoder(speculation_length)`` before ``to_neuron()``
  (``neuron_utils/model_loader.py:355-360``); the draft (``option.speculative_draft_model``) is a
  plain transformers-neuronx model with the target's settings, its own
  ``draft_model_tp_size`` and ``draft_model_compiled_path`` (``transformers_neuronx.py:148-163``);
* one sequence at a time: the naive generator serves a draft, continuous batching refuses it,
  and cache positions come from slot 0 (``optimum_neuron_scheduler.py:361-370, 376-397, 513-515``);
* a step: the draft proposes ``k - 1`` tokens greedily from the last one; the target's
  ``speculative_forward`` scores ``[last, proposals]`` at ``position .. position + k - 1``; the
  engine keeps the greedy prefix (``engine/speculation.py``); when every proposal is kept the
  draft never saw the last one, so it is fed then (``:579-582``, TNX 7a30b42 ``speculation.py:427-430``).

Requests that sample, or steps without room for ``k`` positions, decode plainly; the draft is
fed the same token then, so its cache never has a hole.

Only from TNX 0.11: before c8d6bdc ``speculative_forward`` ran ``_preprocess`` on a static batch
(0623de2 ``llama/model.py:188-212``), which LMI 0.28 replaced with its own copy of the kernel call
(``transformers_neuronx_scheduler/optimum_modeling.py:99-150``); and only for Llama, the one
model this serves that has ``speculative_forward`` (GPT-2 aside).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from djl_python.backends.neuron.strategies import NaiveRollingBatchBackend


class SpeculativeBackend(NaiveRollingBatchBackend):
    """The naive strategy with one slot, plus a draft model and the target's speculation graph."""

    def __init__(self, model: Any, plan: Any, *, draft: Any, speculation_length: int, **kwargs: Any) -> None:
        super().__init__(model, plan, **kwargs)
        if self.limits.max_slots != 1:
            raise ValueError("speculative decoding serves one sequence at a time")
        self.draft, self.k = draft, speculation_length
        self.limits = dataclasses.replace(self.limits, speculation_length=speculation_length)
        self.info.extra["speculation_length"] = speculation_length

    # -- the draft's cache follows every token the target takes ------------------------------
    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        logits = super().prefill(slot_ids, prompts)
        self.draft.reset()
        self._draft(torch.tensor([list(prompts[0])], dtype=torch.int64), None)
        return logits

    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        logits = super().decode(slot_ids, last_tokens, positions)
        self._draft_step(int(last_tokens[0]), int(positions[0]))
        return logits

    # -- one speculative step -------------------------------------------------------------------
    def speculate(self, slot_id: int, last_token: int, position: int) -> tuple[list[int], torch.Tensor]:
        self._check_slots([slot_id])
        fed = self.history.get(slot_id)
        if fed is None or position != len(fed) or position != self.cursor:
            raise ValueError(f"slot {slot_id}: speculation at position {position} but the slot holds "
                             f"{'no sequence' if fed is None else f'{len(fed)} tokens'}")
        if position + self.k > self.limits.n_positions:
            raise ValueError(f"speculation at {position} needs {self.k} positions of {self.limits.n_positions}")
        proposals: list[int] = []
        token = last_token
        for i in range(self.k - 1):  # the draft proposes greedily, as LMI's draft does
            token = int(self._draft_step(token, position + i).argmax())
            proposals.append(token)
        input_ids = torch.tensor([[last_token, *proposals]], dtype=torch.int64)
        cache_ids = torch.arange(position, position + self.k, dtype=torch.int64)
        with torch.inference_mode():
            scored = self.model.speculative_forward(input_ids, cache_ids, torch.zeros(1, dtype=torch.int64),
                                                    speculation_length=self.k)
        if tuple(scored.shape[::2]) != (self.k, 1) or scored.shape[1] < self.limits.vocab_size:
            raise RuntimeError(f"speculative_forward returned logits {tuple(scored.shape)}, expected "
                               f"[{self.k}, {self.limits.vocab_size}, 1]")
        return proposals, scored[:, : self.limits.vocab_size, 0].float()

    def accept_speculation(self, slot_id: int, last_token: int, proposals: Sequence[int], accepted: Sequence[int],
                           position: int) -> None:
        if not 1 <= len(accepted) <= self.k:
            raise ValueError(f"{len(accepted)} accepted tokens for a speculation of {self.k}")
        # The target holds last_token and the kept proposals; the last accepted token is fed next.
        self.history[slot_id] += [last_token, *accepted[:-1]]
        self.cursor = position + len(accepted)
        if len(accepted) == self.k:
            self._draft_step(int(proposals[-1]), position + self.k - 1)

    # -- the draft model -----------------------------------------------------------------------
    def _draft_step(self, token: int, position: int) -> torch.Tensor:
        return self._draft(torch.tensor([[token]], dtype=torch.int64), torch.tensor([position], dtype=torch.int64))[0]

    def _draft(self, input_ids: torch.Tensor, cache_ids: torch.Tensor | None) -> torch.Tensor:
        with torch.inference_mode():
            logits = self.draft.forward(input_ids, cache_ids, torch.zeros(1, dtype=torch.int64))
        if logits.dim() == 3:
            logits = logits[:, -1, :]
        return logits[:, : self.limits.vocab_size].float()
