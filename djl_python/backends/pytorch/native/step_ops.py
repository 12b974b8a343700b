"""The native forward's per-step operations, two ways behind one interface, so the layer
loop of :mod:`.decoder` is written once:

* :class:`TorchOps`: torch ops, any device and dtype; the reference arithmetic
  (``transformers``' ``LlamaRMSNorm`` or ``nn.LayerNorm``, ``rotate_half`` rope, the model's
  own activation, SDPA);
* :class:`KernelOps`: the CPU kernels of :mod:`.cpu_kernels`, one call each where torch
  takes 5-9 ops, with the same operations and roundings (reductions may sum in another
  order; GELU's tanh or erf is approximated), and decode attention reading each row to its
  own position.

Both are built once per step (:meth:`NativeDecoder.step <.decoder.NativeDecoder.step>`) with that
step's token positions and rows, and hold nothing past it. Shapes: ``count`` tokens in the
step, the first ``n`` of them the decode rows, then each prompt's tokens (``spans``: start
and end in the step, ``prompt_rows``: its KV row); ``q`` is ``[count, heads * head_dim]``.
Invariant both keep: after ``rope_write(layer, qkv)`` every token's K/V sits in its row at its
position in that layer's cache, so attention may read it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels, ModelKernels
    from djl_python.backends.pytorch.native.decoder import DecodeRows, NativeDecoder


class StepOps(Protocol):
    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + delta, norm(x + delta))``, the model's norm (RMS, or LayerNorm with ``bias``);
        ``x`` may be updated in place."""

    def rope_write(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        """Rope on q and k of ``qkv [count, (heads + 2 kv) * head_dim]``, k and v written to the
        cache; returns q ``[count, heads * head_dim]``."""

    def mlp_act(self, up: torch.Tensor) -> torch.Tensor:
        """The MLP's activation: ``silu(gate) * up`` of ``up [count, 2 * inter]`` for a gated MLP,
        else the model's activation of ``up [count, inter]`` (which may be updated in place)."""

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a + b`` in the model dtype (``a`` may be updated in place)."""

    def attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """The step's attention, ``q [count, heads * head_dim]`` -> ``[count, heads * head_dim]``:
        each decode row over its row's columns ``0..position``, each prompt token causally over
        its prompt (the columns ``rope_write`` just wrote, after any cached prefix's)."""


class TorchOps:
    """Torch ops. Each prompt attends causally by SDPA on its row. Decode rows attend by SDPA
    over the step's ``width`` columns of every row with an additive per-row mask, the query
    heads sharing a KV head packed as that head's queries (``[n, kv, group, head_dim]``), so
    grouped-query attention reads K/V without repeating them."""

    def __init__(self, model: NativeDecoder, positions: torch.Tensor, owners: torch.Tensor,
                 decode: DecodeRows | None, spans: Sequence[tuple[int, int]], prompt_rows: Sequence[int],
                 starts: Sequence[int] = ()) -> None:
        self.m = model
        self.spans, self.prompt_rows = spans, prompt_rows
        self.starts = list(starts) or [0] * len(spans)  # each prompt's first computed column
        self.cos = model.cos.index_select(0, positions)[:, None, :]
        self.sin = model.sin.index_select(0, positions)[:, None, :]
        kv = model.kv_heads
        self.write = ((owners[:, None] * kv + model.kv_head_index) * model.n_positions + positions[:, None]).view(-1)
        self.decode = decode
        if decode is not None:
            # Column j of a row is valid iff j <= that row's position; stale data lies beyond. An
            # additive mask built once per step: SDPA runs it faster than a boolean one
            # (which it converts in every layer), and adding 0.0 leaves every score as it was.
            n, width = decode.rows.shape[0], decode.width
            self.mask = torch.zeros((n, 1, 1, width), dtype=model.embed.dtype, device=model.embed.device)
            invalid = (model.columns[:width] > decode.positions[:, None]).view(n, 1, 1, width)
            self.mask.masked_fill_(invalid, float("-inf"))
            if model.alibi is not None:  # + slope * column, per query head in the grouped layout
                self.mask = self.mask + self._alibi(width).view(1, model.kv_heads, model.group, width)

    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if delta is not None:
            x = x + delta
        if self.m.recipe.norm == "layer":
            return x, F.layer_norm(x, (x.shape[-1],), weight, bias, self.m.eps)
        # LlamaRMSNorm exactly: statistics in fp32, the weight applied in the model dtype.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.m.eps)
        return x, weight * h.to(x.dtype)

    def rope_write(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        m = self.m
        heads, kv, dim = m.heads, m.kv_heads, m.head_dim
        count = qkv.shape[0]
        qkv = qkv.view(count, -1, dim)
        x = qkv[:, : heads + kv]
        half = dim // 2
        qk = x * self.cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * self.sin  # rotate_half
        m.keys_flat[layer].index_copy_(0, self.write, qk[:, heads:].reshape(count * kv, dim))
        m.values_flat[layer].index_copy_(0, self.write, qkv[:, heads + kv :].reshape(count * kv, dim))
        return qk[:, :heads].flatten(1)

    def mlp_act(self, up: torch.Tensor) -> torch.Tensor:
        if not self.m.recipe.gated:
            return self.m.act_fn(up)
        gate, up = up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        if not self.spans:
            return self._decode_attention(layer, q)  # decode only: no copy into a shared buffer
        m = self.m
        heads, dim = m.heads, m.head_dim
        out = q.new_empty((q.shape[0], heads, dim))
        n = 0 if self.decode is None else self.decode.rows.shape[0]
        if n:
            out[:n] = self._decode_attention(layer, q[:n]).unflatten(1, (heads, dim))
        for row, (start, end), first in zip(self.prompt_rows, self.spans, self.starts):
            # A prompt attends to itself only, causally: read back the row just written (and, from
            # a cached prefix, the ``first`` columns before it).
            prompt_q = q[start:end].unflatten(1, (heads, dim)).transpose(0, 1)[None]
            keys = m.keys[layer, row, :, : first + end - start][None]
            values = m.values[layer, row, :, : first + end - start][None]
            mask = None if first == 0 and m.alibi is None else torch.ones(
                end - start, first + end - start, dtype=torch.bool, device=q.device).tril(diagonal=first)
            if m.alibi is not None:  # causal, plus slope * column per head
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf")) \
                    + self._alibi(first + end - start)[:, None, :]
            attended = F.scaled_dot_product_attention(prompt_q, keys, values, attn_mask=mask, is_causal=mask is None,
                                                      scale=m.scale, enable_gqa=m.kv_heads != heads)
            out[start:end] = attended[0].transpose(0, 1)
        return out.view(q.shape[0], heads * dim)

    def _alibi(self, width: int) -> torch.Tensor:
        """ALiBi's bias ``[heads, width]``: ``slope[head] * column``, in the model dtype."""
        m = self.m
        return (m.alibi[:, None] * m.columns[:width].float()).to(m.embed.dtype)

    def _decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        m, decode = self.m, self.decode
        if decode is None:
            raise ValueError("decode attention in a step without decode rows")
        n, width, first = decode.rows.shape[0], decode.width, decode.first
        if first is not None:
            keys = m.keys[layer, first : first + n, :, :width]
            values = m.values[layer, first : first + n, :, :width]
        else:
            keys = m.keys[layer, :, :, :width].index_select(0, decode.rows)
            values = m.values[layer, :, :, :width].index_select(0, decode.rows)
        grouped = q.reshape(n, m.kv_heads, m.group, m.head_dim)
        return F.scaled_dot_product_attention(grouped, keys, values, attn_mask=self.mask, scale=m.scale).reshape(n, -1)


class KernelOps:
    """The CPU kernels. Attention is one kernel call for the whole step: every token, decode
    row or prompt token, is a query over its KV row's columns ``0..position`` (each row read
    to its own length, no mask, no padding); a prompt token's earlier columns are the ones
    ``rope_write`` wrote this step, so that is causal attention over the prompt. Rope and
    attention run through the model's bound kernels (:class:`.cpu_kernels.ModelKernels`),
    this step's positions and rows checked once here."""

    def __init__(self, model: NativeDecoder, kernels: CpuKernels, bound: ModelKernels, positions: torch.Tensor,
                 owners: torch.Tensor) -> None:
        self.m, self.k = model, kernels
        self.step = bound.step(positions.contiguous(), owners.contiguous())

    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # x is the step's own hidden state (embedding output, then updated here only): in place is safe.
        if self.m.recipe.norm == "layer":
            return x, self.k.add_layer_norm(x, delta, weight, bias, self.m.eps)
        return x, self.k.add_rms_norm(x, delta, weight, self.m.eps)

    def rope_write(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        return self.step.rope_write(layer, qkv.contiguous())

    def mlp_act(self, up: torch.Tensor) -> torch.Tensor:
        if self.m.recipe.gated:
            return self.k.silu_mul(up.contiguous())
        return self.k.activate(up.contiguous(), self.m.recipe.kernel_activation)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.k.add_into(a, b)

    def attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        return self.step.attention(layer, q, self.m.scale)
