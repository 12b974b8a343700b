"""Per-row decode attention masks, derived from each row's position.

A decode step attends columns ``0..width-1`` of every row it runs; column ``j`` of a row
decoding at position ``p`` is open iff ``j <= p``. Everything beyond ``p`` is closed: the
right padding of a grouped prefill, stale data from an earlier request in the row, and the
columns a verification wrote for speculated tokens that were not accepted. The mask is a
function of the step's positions alone, built once per step (one ``[n, width]`` comparison),
so no state about a row can go stale between steps.

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
    """Decode masks of one model (its mask form and dtype); see the module docstring."""

    def __init__(self, mode: MaskMode, n_positions: int, dtype: torch.dtype, device: torch.device) -> None:
        self.mode = mode
        self._columns = torch.arange(n_positions, device=device)
        self._closed = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=device)
        self._open = torch.tensor(0.0, dtype=dtype, device=device)

    def decode_mask(self, positions: torch.Tensor, width: int) -> torch.Tensor:
        """The mask of a decode step whose rows decode at ``positions`` ``[n]``, over columns ``0..width-1``."""
        is_open = self._columns[None, :width] <= positions[:, None]
        if self.mode == "2d":
            return is_open.long()
        return torch.where(is_open, self._open, self._closed)[:, None, None, :]
