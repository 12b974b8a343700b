"""A per-row KV cache for Hugging Face models: the PyTorch twin of Neuron's ``seq_ids`` rows.

Every layer owns two preallocated tensors ``[max_rows, kv_heads, n_positions, head_dim]``
(K and V). Row ``r`` holds one sequence (the backend maps slots to rows, see
:mod:`.slot_rows`); column ``j`` holds the token at position ``j`` of that sequence.
Requests join (prefill) and leave (release) without touching other rows, which is what
``transformers``' own ``DynamicCache``/``StaticCache`` cannot do: they share one write
position across the batch.

The caller describes each forward with :meth:`RowCache.set_prefill` or
:meth:`RowCache.set_decode` *before* running the model; every attention layer then calls
``cache.update(k, v, layer_idx)`` and gets back the keys/values it must attend over:

* prefill: the freshly computed ``[n, h, L, d]`` states themselves (a new prompt only
  attends to itself), after they are written to columns ``0..L-1`` of each listed row;
* decode: the listed rows limited to the first ``width`` columns (a bucketed bound on the
  longest sequence in the step), a view when the rows are contiguous and an
  ``index_select`` gather otherwise;
* extension: one row's tokens written from column ``start`` on, attending that row's columns
  up to the last one written (a prompt continued after a cached prefix or an earlier chunk,
  or a running sequence's speculated tokens).

Invariant (the reason release needs no zeroing): columns a row has not written since its
last prefill may hold stale data from an earlier request, or the prefill's right padding.
The caller's attention mask must exclude every column of a row beyond that row's current
position; ``attention_masks.RowMasks`` builds exactly that from the positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class RowStep:
    """What the current forward touches; shared by all layers of one :class:`RowCache`.

    Attributes:
        rows: ``[n]`` int64 row indices on the cache's device (ascending, distinct).
        first: the first row when ``rows`` is ``first..first+n-1`` (rows can be sliced),
            else ``None`` (rows are gathered).
        positions: ``[n]`` int64 decode positions; ``None`` during prefill.
        start: an extension's first column (one row, ``first``, continued from there); else ``None``.
        q_len: query tokens per row in this forward.
        width: key/value columns attention sees (``q_len`` during prefill, ``start + q_len`` in an
            extension).
    """

    rows: torch.Tensor | None = None
    first: int | None = None
    positions: torch.Tensor | None = None
    start: int | None = None
    q_len: int = 0
    width: int = 0


class RowLayer(CacheLayerMixin):
    """One layer's K/V rows. Allocated on the first ``update`` (the backend's warm-up prefill),
    because head count and layout vary by architecture and are best read off the real key
    states: GQA models pass their kv heads, gpt_bigcode's MQA passes ``[n, 1, L, d]`` (one
    shared head; transformers 5 no longer hands the cache a fused K|V tensor)."""

    is_sliding = False

    def __init__(self, step: RowStep, max_rows: int, n_positions: int) -> None:
        super().__init__()
        self.step = step
        self.max_rows = max_rows
        self.n_positions = n_positions

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        _, heads, _, k_dim = key_states.shape
        shape = (self.max_rows, heads, self.n_positions)
        self.keys = torch.zeros((*shape, k_dim), dtype=key_states.dtype, device=key_states.device)
        self.values = torch.zeros(
            (*shape, value_states.shape[-1]), dtype=value_states.dtype, device=value_states.device
        )
        self.device = key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        step = self.step
        if step.start is not None:  # extension: one row's columns start.., attending its columns 0..
            row, end = step.first, step.width
            self.keys[row, :, step.start : end].copy_(key_states[0])
            self.values[row, :, step.start : end].copy_(value_states[0])
            return self.keys[row : row + 1, :, :end], self.values[row : row + 1, :, :end]
        if step.positions is None:  # prefill: rows restart at column 0
            length = key_states.shape[2]
            if step.first is not None:
                span = slice(step.first, step.first + key_states.shape[0])
                self.keys[span, :, :length].copy_(key_states)
                self.values[span, :, :length].copy_(value_states)
            else:
                self.keys[:, :, :length].index_copy_(0, step.rows, key_states)
                self.values[:, :, :length].index_copy_(0, step.rows, value_states)
            return key_states, value_states
        # decode: one new column per row, at that row's own position
        self.keys[step.rows, :, step.positions] = key_states[:, :, 0]
        self.values[step.rows, :, step.positions] = value_states[:, :, 0]
        if step.first is not None:
            span = slice(step.first, step.first + key_states.shape[0])
            return self.keys[span, :, : step.width], self.values[span, :, : step.width]
        return (
            self.keys[:, :, : step.width].index_select(0, step.rows),
            self.values[:, :, : step.width].index_select(0, step.rows),
        )

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.step.width, 0

    def get_seq_length(self) -> int:
        return self.step.width - self.step.q_len

    def get_max_length(self) -> int:
        return self.n_positions

    def reset(self) -> None:  # rows are reset one by one by prefill; a global reset has no meaning here
        raise NotImplementedError("RowCache rows are reset one by one by prefill")

    def nbytes(self) -> int:
        if not self.is_initialized:
            return 0
        return self.keys.nbytes + self.values.nbytes


class RowCache(Cache):
    """``transformers`` ``Cache`` with one independent row per sequence. See the module docstring.

    ``get_seq_length``/``get_mask_sizes`` describe the current step so that
    ``masking_utils`` builds the right causal mask when the model builds its own (prefill,
    and bloom's 2D-mask mode): queries sit at columns ``width - q_len .. width - 1``.
    """

    def __init__(self, num_layers: int, max_rows: int, n_positions: int) -> None:
        self.step = RowStep()
        super().__init__(layers=[RowLayer(self.step, max_rows, n_positions) for _ in range(num_layers)])

    def set_prefill(self, rows: torch.Tensor, first: int | None, length: int) -> None:
        """Next forward writes ``length`` (padded) tokens to columns ``0..length-1`` of ``rows``."""
        step = self.step
        step.rows, step.first, step.positions, step.start = rows, first, None, None
        step.q_len = step.width = length

    def set_decode(self, rows: torch.Tensor, first: int | None, positions: torch.Tensor, width: int) -> None:
        """Next forward writes one token per row at ``positions`` and attends ``width`` columns."""
        step = self.step
        step.rows, step.first, step.positions, step.start = rows, first, positions, None
        step.q_len, step.width = 1, width

    def set_extend(self, row: int, start: int, length: int) -> None:
        """Next forward writes ``length`` tokens of one row to columns ``start..start+length-1``, which
        attend the row's columns from 0 (the row holds ``start`` columns: a cached prefix, earlier
        chunks of the prompt, or a running sequence's tokens)."""
        step = self.step
        step.rows, step.first, step.positions, step.start = None, row, None, start
        step.q_len, step.width = length, start + length

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.step.width - self.step.q_len

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.step.width, 0

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy columns ``0..length-1`` of row ``src`` into row ``dst`` in every layer."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys[dst, :, :length].copy_(layer.keys[src, :, :length])
                layer.values[dst, :, :length].copy_(layer.values[src, :, :length])

    def nbytes(self) -> int:
        """Bytes held by all K/V rows (0 before the first forward)."""
        return sum(layer.nbytes() for layer in self.layers)
