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

import torch

from djl_python.backends.attention_masks import RowMasks, mask_mode_for
from djl_python.backends.row_cache import RowCache


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

    def prefill(self, rows: torch.Tensor, first: int | None, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Right-padded prompts ``tokens [n, L]`` into ``rows``; logits at ``last`` ``[n, vocab]``."""
        n, length = tokens.shape
        self._masks.reset(rows, last + 1)
        self._cache.set_prefill(rows, first, length)
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
