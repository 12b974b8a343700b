"""State shared by the Neuron strategies: the built transformers-neuronx model, its load plan,
the slot limits they imply, and the one ``forward`` call every strategy makes.

This module knows no strategy and no loading: :mod:`.strategies` subclasses
:class:`NeuronBackend`, and :mod:`.load` decides the plan, builds the model and picks
the strategy. Nothing here has run on Neuron hardware; it is exercised through the
test double in ``tests/neuron_double`` (docs/neuron.md lists what that covers).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from djl_python.backends.base import Backend, BackendInfo, BackendLimits
from djl_python.backends.neuron.plan import NeuronLoadPlan
from djl_python.config import dtypes


def concatenates_prompts(model: Any) -> bool:
    """Whether the built model prefills several prompts as one concatenated row, whose total
    length must fit a context bucket (TNX 0.13 with ``cache_layout=BSH`` under continuous
    batching: 1ade6d7 ``config.py:369-371`` ``use_1d_query``, ``base.py:513-537``). Such a
    model gets one prompt per prefill; otherwise both strategies take any number."""
    return bool(getattr(getattr(model, "neuron_config", None), "use_1d_query", False))


class NeuronBackend(Backend):
    """State and helpers shared by the strategies in :mod:`.strategies`; :func:`.load.load_neuron_backend`
    builds one."""

    def __init__(self, model: Any, plan: NeuronLoadPlan, *, vocab_size: int, eos_ids: tuple[int, ...],
                 tnx_version: str) -> None:
        self.model, self.plan = model, plan
        # Filler for padding and empty rows (DJL pads with EOS); its KV is masked or never read.
        self.pad_token_id = eos_ids[0] if eos_ids else 0
        self.limits = BackendLimits(
            max_slots=plan.batch_size,
            n_positions=plan.n_positions,
            prefill_buckets=tuple(plan.prefill_buckets),
            vocab_size=vocab_size,
            eos_token_ids=eos_ids,
            max_prefill_slots=1 if concatenates_prompts(model) else None,
        )
        self.info = BackendInfo(
            name="neuron",
            device="neuron",
            model_type=plan.model_type,
            dtype=dtypes.canonical(plan.model_kwargs.get("amp")) or str(plan.model_kwargs.get("amp")),
            extra={"strategy": plan.strategy, "tp_degree": plan.model_kwargs.get("tp_degree"),
                   "transformers_neuronx": tnx_version},
        )

    # -- shared helpers -------------------------------------------------------------------------
    def _check_slots(self, slot_ids: Sequence[int]) -> None:
        if not slot_ids:
            raise ValueError("slot_ids must not be empty")
        if list(slot_ids) != sorted(set(slot_ids)) or slot_ids[0] < 0 or slot_ids[-1] >= self.limits.max_slots:
            raise ValueError(f"slot_ids must be ascending, distinct and in [0, {self.limits.max_slots}): {slot_ids}")

    def _forward(self, input_ids: torch.Tensor, cache_ids: torch.Tensor, start_ids: torch.Tensor, *,
                 rows: int) -> torch.Tensor:
        """TNX ``forward`` (positional: GPT-J/GPT-NeoX call the second argument ``cache_offset``)."""
        with torch.inference_mode():
            logits = self.model.forward(input_ids, cache_ids, start_ids)
        if logits.dim() == 3:  # [B, 1, V] from wrappers
            logits = logits[:, -1, :]
        if logits.shape[0] != rows or logits.shape[1] < self.limits.vocab_size:
            raise RuntimeError(f"transformers-neuronx returned logits {tuple(logits.shape)}, expected "
                               f"[{rows}, {self.limits.vocab_size}]")
        # TNX pads the vocabulary to a multiple of tp_degree; the padding columns are not tokens.
        return logits[:, : self.limits.vocab_size].float()
