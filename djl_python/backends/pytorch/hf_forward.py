"""The Hugging Face forward on packed KV rows: the fallback for every architecture without a
native implementation (:mod:`.native`).

The model runs with a :class:`.row_cache.RowCache` (one independent KV row per sequence),
per-row ``position_ids`` and per-row decode masks (:class:`.attention_masks.RowMasks`).
Prefill lets the model build its own causal mask (sdpa's ``is_causal`` fast path: right
padding only ever follows real tokens); only each prompt's last real position reaches the
LM head (``logits_to_keep`` as per-row indices).
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch

from djl_python.backends.pytorch.attention_masks import RowMasks, mask_mode_for
from djl_python.backends.pytorch.cpu_policy import CPU_PREFILL_MERGE_PAD, prefill_groups
from djl_python.backends.pytorch.kv_cache import RowCache
from djl_python.backends.pytorch.slot_rows import first_if_contiguous


class HFRows:
    """A Hugging Face causal LM with ``max_rows`` KV rows; the same four calls as
    :class:`.native.NativeLlama` (``prefill``, ``decode``, ``move_row``, ``nbytes``)."""

    def __init__(self, model: torch.nn.Module, max_rows: int, n_positions: int) -> None:
        self.model = model
        device = next(model.parameters()).device
        # Models with alibi take no position_ids; all others get per-row positions.
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        layers = model.config.get_text_config().num_hidden_layers
        self._cache = RowCache(layers, max_rows, n_positions)
        self._masks = RowMasks(mask_mode_for(model.config.model_type), max_rows, n_positions, model.dtype, device)
        self._positions = torch.arange(n_positions, device=device)
        self._merge_pad = CPU_PREFILL_MERGE_PAD if device.type == "cpu" else None

    def prefill(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Prompts into their rows, grouped by length (:func:`.cpu_policy.prefill_groups`) and
        right-padded within a group; logits at each prompt's last position, ``[n, vocab]``."""
        groups = prefill_groups([len(p) for p in prompts], self._merge_pad)
        if len(groups) == 1 and list(rows) == sorted(rows):
            return self._prefill_padded(rows, prompts)
        logits = None
        for group in groups:
            group.sort(key=rows.__getitem__)  # ascending rows, as the cache expects
            part = self._prefill_padded([rows[i] for i in group], [prompts[i] for i in group])
            if logits is None:
                logits = part.new_empty((len(prompts), part.shape[-1]))
            logits.index_copy_(0, torch.tensor(group, device=part.device), part)
        return logits

    def _prefill_padded(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """One forward over ``prompts`` right-padded to the longest; ``rows`` ascending."""
        n, length = len(rows), max(len(p) for p in prompts)
        flat = [*rows, *(len(p) - 1 for p in prompts)]
        for prompt in prompts:  # right padding with token 0: only later (masked) columns see it
            flat.extend(prompt)
            flat.extend([0] * (length - len(prompt)))
        packed = torch.tensor(flat, dtype=torch.long).to(self._positions.device, non_blocking=True)
        row_ids, last, tokens = packed[:n], packed[n : 2 * n], packed[2 * n :].view(n, length)
        first = first_if_contiguous(rows)
        self._masks.reset(row_ids, last + 1)
        self._cache.set_prefill(row_ids, first, length)
        kwargs = {}
        if self._takes_positions:
            kwargs["position_ids"] = self._positions[:length].expand(n, length)
        out = self.model(
            input_ids=tokens, cache=self._cache, use_cache=True, logits_to_keep=last.view(n, 1), **kwargs
        )
        return out.logits[:, -1, :].float()

    def decode(
        self, rows: torch.Tensor, first: int | None, tokens: torch.Tensor, positions: torch.Tensor, width: int
    ) -> torch.Tensor:
        """One token per row at ``positions``, attending columns ``0..width-1``; ``[n, vocab]``."""
        n = tokens.shape[0]
        self._masks.open(rows, positions)
        self._cache.set_decode(rows, first, positions, width)
        kwargs = {"attention_mask": self._masks.decode_mask(rows, first, width)}
        if self._takes_positions:
            kwargs["position_ids"] = positions.view(n, 1)
        out = self.model(input_ids=tokens.view(n, 1), cache=self._cache, use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy the first ``length`` columns of row ``src`` into row ``dst`` (K/V and mask)."""
        self._cache.move_row(dst, src, length)
        # A row's mask is always "columns 0..length-1 open": prefill opens the prompt, each
        # decode the next column. Rebuilding it is exact.
        device = self._positions.device
        self._masks.reset(torch.tensor([dst], device=device), torch.tensor([length], device=device))

    def nbytes(self) -> int:
        return self._cache.nbytes()

    def close(self) -> None:
        self._cache.layers.clear()
