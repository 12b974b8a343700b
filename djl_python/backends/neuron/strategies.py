"""The ways a transformers-neuronx (TNX) model serves a rolling batch.

All implement the slot contract of :mod:`djl_python.backends.base` on top of
TNX ``forward(input_ids, cache_ids, start_ids)`` (reference §1.6); they differ
in what one KV-cache row is.

**Continuous batching** (Llama, Mistral): ``start_ids`` are ``seq_ids``, one
KV row per slot, each with its own positions. A prefill touches only the new
slots; a decode lists every occupied slot (TNX runs the full batch). Only each
slot's token list is kept on the host (for one corner case, see the class).

**Single row** (GPT-J): the naive strategy with one KV row, because GPT-J's mask
ignores ``start_ids`` (transformers-neuronx ``gptj/hlo.py``) and left padding
would be attended.

**Naive rolling batch** (every other architecture): TNX static batching, where
all ``batch_size`` rows are always passed and share one cache column per step.
Rows are left-padded so each row's last token sits in the same column, and
``start_ids[row]`` is the row's first real column. See
:class:`NaiveRollingBatchBackend` for the invariant that keeps the rows right.
"""

from __future__ import annotations

from typing import Sequence

import torch

from djl_python.backends.neuron.backend import NeuronBackend
from djl_python.backends.neuron.plan import NeuronLoadPlan
from djl_python.backends.neuron.versions import MODELS


def largest_context_bucket(plan: NeuronLoadPlan) -> int | None:
    """The largest context graph TNX builds: the given ``context_length_estimate``, else TNX's default for
    classes with context buckets (``bucket.context_sizes``: half of each power-of-two token bucket up to
    ``n_positions``, so ``n_positions // 2``); None for classes without (GPT-2, GPT-J, GPT-NeoX)."""
    given = plan.model_kwargs.get("context_length_estimate")
    if given:
        return max(given) if isinstance(given, list) else int(given)
    support = MODELS.get(plan.model_type)
    return plan.n_positions // 2 if support is not None and support.context_length_estimate else None


class ContinuousBatchingBackend(NeuronBackend):
    """One KV row per slot (``seq_ids`` = slot ids); see the module docstring.

    Inputs are what DJL passes (djl-serving afece25d ``transformers_neuronx_scheduler/
    optimum_neuron_scheduler.py`` ``ContinuousBatchingNeuronGenerator``): a prefill is
    right-padded to its *longest prompt* only, with ``cache_ids = arange(width) * mask``;
    transformers-neuronx pads to the context bucket itself. This answers at each row's
    last token in every release: before ``vectorize_last_token_id`` (8b01968, 7a30b42)
    a multi-row prefill takes each row's ``cache_ids.max()`` and a one-row prefill
    ``width - 1``, so padding to a bucket here would answer at a padding column.

    Invariant (hardware): a decode runs the full batch; every slot not listed gets
    token 0 written at cache position 0 (``base._prepare_for_continuous_batching``,
    every release). So every occupied slot must be listed in every decode call;
    a decode that leaves one out is refused before it corrupts that slot.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.occupied: set[int] = set()
        # Tokens fed per occupied slot (prompt, then each decoded token): only to re-prefill a
        # companion row in the one corner case below; never read otherwise.
        self.history: dict[int, list[int]] = {}
        config = getattr(self.model, "neuron_config", None)
        self.vectorized = config is not None and bool(getattr(config, "vectorize_last_token_id", False))

    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Prefill the new slots; see the class docstring for the inputs.

        A prefill one column wide is not a prefill to TNX: ``_prepare_for_continuous_batching``
        takes it for a decode (``n_active_tokens > 1`` is the prefill test) and writes token 0
        at position 0 of every other slot. So while other slots are occupied it is sent two
        columns wide (a padding column with cache id 0). Releases without
        ``vectorize_last_token_id`` then answer a one-row prefill at column 1, the padding, so
        one occupied slot is re-prefilled alongside with exactly the tokens it holds (its row is
        rewritten unchanged, its logits dropped) and each row answers at its own ``cache_ids.max()``.
        """
        self._check_slots(slot_ids)
        lengths = [len(p) for p in prompts]
        if len(prompts) != len(slot_ids) or min(lengths, default=0) < 1:
            raise ValueError("prefill needs one non-empty prompt per slot")
        self.limits.bucket_for(max(lengths))  # past the largest bucket TNX asserts "invalid input prompt length"
        rows = {slot: list(prompt) for slot, prompt in zip(slot_ids, prompts)}
        others = sorted(self.occupied - set(slot_ids))
        width = max(lengths)
        if width == 1 and others:
            width = 2
            if len(rows) == 1 and not self.vectorized:
                rows[others[0]] = self.history[others[0]]
                width = max(2, len(rows[others[0]]))
        order = sorted(rows)
        input_ids = torch.full((len(order), width), self.pad_token_id, dtype=torch.int64)
        cache_ids = torch.zeros((len(order), width), dtype=torch.int64)
        for row, slot in enumerate(order):
            tokens = rows[slot]
            input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
            cache_ids[row, : len(tokens)] = torch.arange(len(tokens))
        seq_ids = torch.tensor(order, dtype=torch.int64)
        logits = self._forward(input_ids, cache_ids, seq_ids, rows=len(order))
        for slot, prompt in zip(slot_ids, prompts):
            self.history[slot] = list(prompt)
        self.occupied.update(slot_ids)
        return logits[[order.index(slot) for slot in slot_ids]]

    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        self._check_slots(slot_ids)
        left_out = sorted(self.occupied - set(slot_ids))
        if left_out:
            raise ValueError(
                f"continuous-batching decode must list every occupied slot; {left_out} left out would have "
                "token 0 written at cache position 0 (transformers-neuronx pads a decode to the full batch)")
        n = len(slot_ids)
        input_ids = torch.tensor(list(last_tokens), dtype=torch.int64).view(n, 1)
        cache_ids = torch.tensor(list(positions), dtype=torch.int64).view(n, 1)
        seq_ids = torch.tensor(list(slot_ids), dtype=torch.int64)
        logits = self._forward(input_ids, cache_ids, seq_ids, rows=n)
        for slot, token in zip(slot_ids, last_tokens):
            self.history[slot].append(int(token))
        return logits

    def release(self, slot_id: int) -> None:
        # The next prefill of this slot rewrites positions 0..len-1 and masks the rest by position.
        self.occupied.discard(slot_id)
        self.history.pop(slot_id, None)


class NaiveRollingBatchBackend(NeuronBackend):
    """TNX static batching driven as a rolling batch by re-prefilling.

    Host state: ``history[slot]`` = every token the engine has *fed* for that
    slot (its prompt, then each ``last_tokens`` passed to ``decode``), and
    ``cursor`` = the next free cache column, shared by all rows.

    Invariant (holds after every call): each occupied slot's KV row contains
    exactly ``history[slot]``, left-padded so its last token is at column
    ``cursor - 1`` with ``start_ids[slot]`` at its first token. A token the
    engine sampled but has not fed back yet is never in the cache, which is why
    a re-prefill uses ``history`` as is: the engine's next ``decode`` for that
    slot passes exactly that pending token at ``len(history[slot])``.

    * ``prefill(new)``: ``reset()`` and re-prefill every occupied row with its
      history (the new ones with their prompts); return the new slots' rows.
      The old slots' rows are recomputed and discarded.
    * ``decode`` over *all* occupied slots with a free column: one static
      decode step (filler in empty rows), ``cursor += 1``.
    * ``decode`` over a subset, or with no free column left: a rebuild as in
      prefill with each listed slot's new token appended, so no row is ever
      left holding a filler it did not ask for and columns are compacted.
      (The engine decodes the running slots before it prefills new ones, so
      that decode covers every occupied row and a join costs one rebuild.)

    Logits rows are picked by slot id, never by position in a list of ready slots.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: dict[int, list[int]] = {}
        self.cursor = 0
        self._start = torch.zeros(self.limits.max_slots, dtype=torch.int64)
        self._largest_context_bucket = largest_context_bucket(self.plan)

    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        self._check_slots(slot_ids)
        if len(prompts) != len(slot_ids) or any(len(p) < 1 for p in prompts):
            raise ValueError("prefill needs one non-empty prompt per slot")
        for slot, prompt in zip(slot_ids, prompts):
            self.limits.bucket_for(len(prompt))  # the engine's own check; repeated for direct callers
            self.history[slot] = list(prompt)
        return self._rebuild()[list(slot_ids)]

    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        self._check_slots(slot_ids)
        for slot, token, position in zip(slot_ids, last_tokens, positions):
            fed = self.history.get(slot)
            if fed is None or position != len(fed):
                raise ValueError(
                    f"slot {slot}: decode at position {position} but the slot holds "
                    f"{'no sequence' if fed is None else f'{len(fed)} tokens'}"
                )
        for slot, token in zip(slot_ids, last_tokens):
            self.history[slot].append(int(token))
        if list(slot_ids) != sorted(self.history) or self.cursor >= self.limits.n_positions:
            return self._rebuild()[list(slot_ids)]
        input_ids = torch.full((self.limits.max_slots, 1), self.pad_token_id, dtype=torch.int64)
        for slot, token in zip(slot_ids, last_tokens):
            input_ids[slot, 0] = int(token)
        cache_ids = torch.tensor([self.cursor], dtype=torch.int64)
        logits = self._forward(input_ids, cache_ids, self._start, rows=self.limits.max_slots)
        self.cursor += 1
        return logits[list(slot_ids)]

    def release(self, slot_id: int) -> None:
        self.history.pop(slot_id, None)

    def _rebuild(self) -> torch.Tensor:
        """Reset the cache and prefill every row left-padded to the longest history; logits for all rows."""
        width = max(len(tokens) for tokens in self.history.values())
        rows = self.limits.max_slots
        input_ids = torch.full((rows, width), self.pad_token_id, dtype=torch.int64)
        # An empty row holds one filler token in the last column: harmless, and never read.
        start = torch.full((rows,), width - 1, dtype=torch.int64)
        for slot, tokens in self.history.items():
            input_ids[slot, width - len(tokens):] = torch.tensor(tokens, dtype=torch.int64)
            start[slot] = width - len(tokens)
        self.model.reset()
        # cache_ids=None, as DJL (afece25d optimum_modeling.py get_cache_ids(prefill=True)) and optimum
        # pass: TNX then uses arange(bucket). An explicit arange(width) is not padded to the context
        # bucket before 0623de2 (base._prepare_for_par_ctx_rhs_padding), which breaks 0.9 and early 0.10.
        bucket = self._largest_context_bucket
        if bucket is not None and width == bucket + 1:
            # TNX 0.10 (7a30b42, 0623de2 base.context) loops over the columns left after the largest bucket
            # with ``while current < context_length - 1``, so a single leftover column never runs. Run the
            # bucket, then that column as a token step: right on every release, and no padding column
            # (whose non-zero start_ids would answer NaN for Llama before 0.11).
            self._forward(input_ids[:, :bucket], None, start, rows=rows)
            logits = self._forward(input_ids[:, bucket:], torch.tensor([bucket], dtype=torch.int64), start, rows=rows)
        else:
            logits = self._forward(input_ids, None, start, rows=rows)
        self.cursor, self._start = width, start
        return logits
