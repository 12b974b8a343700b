"""The Hugging Face forward on packed KV rows: the fallback for every architecture without a
native implementation (:mod:`.native`).

The model runs with a :class:`.kv_cache.RowCache` (one independent KV row per sequence),
per-row ``position_ids`` and per-row decode masks built from the rows' positions
(:class:`.attention_masks.RowMasks`).
Prefill lets the model build its own causal mask (sdpa's ``is_causal`` fast path: right
padding only ever follows real tokens); only each prompt's last real position reaches the
LM head (``logits_to_keep`` as per-row indices).

A prompt that continues what its row holds (a cached prefix, an earlier chunk) and a running
sequence's speculated tokens are *extensions*: one row at a time, its tokens from column
``start`` on, attending the row's columns from 0. The model builds that causal mask itself
from the cache's sizes (``RowCache.set_extend``: ``start`` columns already seen), as it does
when it continues its own cache, so every architecture gets it without a mask of ours.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch

from djl_python.backends.pytorch.attention_masks import RowMasks, mask_mode_for
from djl_python.backends.pytorch.cpu_policy import CPU_PREFILL_MERGE_PAD, prefill_groups
from djl_python.backends.pytorch.kv_cache import RowCache
from djl_python.backends.pytorch.native.decoder import DecodeRows
from djl_python.backends.pytorch.slot_rows import first_if_contiguous


class HFRows:
    """A Hugging Face causal LM with ``max_rows`` KV rows; the same four calls as
    :class:`.native.decoder.NativeDecoder` (``prefill``, ``decode``, ``move_row``, ``nbytes``)."""

    def __init__(self, model: torch.nn.Module, max_rows: int, n_positions: int) -> None:
        self.model = model
        device = next(model.parameters()).device
        # Models with alibi take no position_ids; all others get per-row positions.
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        layers = model.config.get_text_config().num_hidden_layers
        self._cache = RowCache(layers, max_rows, n_positions)
        self._masks = RowMasks(mask_mode_for(model.config.model_type), n_positions, model.dtype, device)
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
        self._cache.set_decode(rows, first, positions, width)
        kwargs = {"attention_mask": self._masks.decode_mask(positions, width)}
        if self._takes_positions:
            kwargs["position_ids"] = positions.view(n, 1)
        out = self.model(input_ids=tokens.view(n, 1), cache=self._cache, use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def step(
        self, decode: DecodeRows | None, prefill: tuple[Sequence[int], Sequence[Sequence[int]]] | None,
        starts: Sequence[int] | None = None, every_position: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:meth:`.native.decoder.NativeDecoder.step`'s contract as two calls: the decode rows, then the
        prompts, each into its row from column ``starts[i]`` (a prompt from 0 joins the grouped
        prefill; one from further on is an extension, as is every prompt with ``every_position``)."""
        decoded = None if decode is None else self.decode(decode.rows, decode.first, decode.tokens,
                                                          decode.positions, decode.width)
        if prefill is None:
            return decoded, None
        rows, prompts = prefill
        first = list(starts) if starts is not None else [0] * len(prompts)
        whole = [i for i, start in enumerate(first) if start == 0 and not every_position]
        parts: list[torch.Tensor | None] = [None] * len(prompts)
        if whole:
            logits = self.prefill([rows[i] for i in whole], [prompts[i] for i in whole])
            for k, i in enumerate(whole):
                parts[i] = logits[k : k + 1]
        for i, start in enumerate(first):
            if parts[i] is None:
                parts[i] = self.extend(rows[i], prompts[i][start:], start, every_position)
        return decoded, torch.cat(parts) if len(parts) > 1 else parts[0]

    def extend(self, row: int, tokens: Sequence[int], start: int, every_position: bool = False) -> torch.Tensor:
        """``tokens`` into ``row`` at columns ``start..`` (the row holds columns ``0..start-1``), causal
        over the row; logits of the last token ``[1, vocab]``, or of every token ``[len, vocab]``."""
        length, device = len(tokens), self._positions.device
        ids = torch.tensor(list(tokens), dtype=torch.long).to(device, non_blocking=True).view(1, length)
        self._cache.set_extend(row, start, length)
        kwargs = {}
        if self._takes_positions:
            kwargs["position_ids"] = self._positions[start : start + length].view(1, length)
        out = self.model(input_ids=ids, cache=self._cache, use_cache=True,
                         logits_to_keep=length if every_position else 1, **kwargs)
        return out.logits[0].float()

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy the first ``length`` columns of row ``src`` into row ``dst``."""
        self._cache.move_row(dst, src, length)

    def nbytes(self) -> int:
        return self._cache.nbytes()

    def close(self) -> None:
        self._cache.layers.clear()
