"""Per-row decode attention masks, kept incrementally so a decode step builds none from scratch.

One row per KV row over ``n_positions`` columns; column ``j`` is open iff the row has
written position ``j`` since its last prefill. Prefill opens ``0..len-1`` and closes the rest
(right padding and stale data from an earlier request included); each decode opens the one
column it writes. A decode step then only slices (contiguous rows) or gathers them and
the first ``width`` columns.

Two forms, chosen per architecture:

* ``"4d"``: an additive mask in the model dtype (0 open, dtype-min closed), handed to the
  model as ``[n, 1, 1, width]``; ``masking_utils`` passes 4D masks through untouched, so it
  serves sdpa and eager alike.
* ``"2d"``: a 0/1 ``[n, width]`` padding mask. Bloom needs it: it builds its alibi bias
  from the 2D mask's cumulative sum (column ``j`` then gets bias ``slope * j``, i.e. column
  ``j`` *is* position ``j``, which holds in a KV row), then derives the causal mask itself.
"""

from __future__ import annotations

from typing import Literal

import torch

MaskMode = Literal["4d", "2d"]

# Architectures whose forward builds position information from a 2D mask we must supply.
_TWO_D_MASK_ARCHS = frozenset({"bloom"})


def mask_mode_for(model_type: str) -> MaskMode:
    """Which mask form ``model_type`` needs in decode (see the module docstring)."""
    return "2d" if model_type in _TWO_D_MASK_ARCHS else "4d"


class RowMasks:
    """The open/closed columns of every KV row. All tensors live on one device."""

    def __init__(
        self, mode: MaskMode, max_rows: int, n_positions: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.mode = mode
        if mode == "4d":
            self._open, self._closed = 0.0, torch.finfo(dtype).min
            self._table = torch.full((max_rows, n_positions), self._closed, dtype=dtype, device=device)
        else:
            self._open, self._closed = 1, 0
            self._table = torch.zeros((max_rows, n_positions), dtype=torch.long, device=device)
        self._columns = torch.arange(n_positions, device=device)
        # A 0-dim value tensor so the per-step ``open`` allocates nothing.
        self._open_value = torch.tensor(self._open, dtype=self._table.dtype, device=device)

    def reset(self, rows: torch.Tensor, lengths: torch.Tensor) -> None:
        """Open columns ``0..lengths[i]-1`` of row ``rows[i]`` and close all others."""
        is_open = self._columns[None, :] < lengths[:, None]
        fresh = torch.where(is_open, self._open, self._closed).to(self._table.dtype)
        self._table.index_copy_(0, rows, fresh)

    def open(self, rows: torch.Tensor, positions: torch.Tensor) -> None:
        """Open column ``positions[i]`` of row ``rows[i]`` (the token decode is writing)."""
        self._table.index_put_((rows, positions), self._open_value)

    def decode_mask(self, rows: torch.Tensor, first: int | None, width: int) -> torch.Tensor:
        """The mask for a decode step over ``rows`` and columns ``0..width-1``."""
        if first is not None:
            picked = self._table[first : first + rows.shape[0], :width]
        else:
            picked = self._table[:, :width].index_select(0, rows)
        return picked[:, None, None, :] if self.mode == "4d" else picked
