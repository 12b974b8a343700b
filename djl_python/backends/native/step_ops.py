"""The native forward's per-step operations, two ways behind one interface, so the layer
loop of :mod:`.llama` is written once:

* :class:`TorchOps`: torch ops, any device and dtype; the reference arithmetic
  (``transformers``' ``LlamaRMSNorm``, ``rotate_half`` rope, SiLU-gated MLP, SDPA);
* :class:`KernelOps`: the CPU kernels of :mod:`.cpu_kernels`, one call each where torch
  takes 5-9 ops, with the same operations and roundings (reductions may sum in another
  order), and decode attention reading each row to its own position.

Both are built once per step (:meth:`NativeLlama.step <.llama.NativeLlama.step>`) with that
step's token positions and rows, and hold nothing past it. Shapes: ``count`` tokens in the
step, the first ``n`` of them the decode rows; ``q`` is ``[tokens, heads * head_dim]``.
Invariant both keep: after ``rope_write(layer, qkv)`` every token's K/V sits in its row at its
position in that layer's cache, so attention may read it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from djl_python.backends.native.cpu_kernels import CpuKernels
    from djl_python.backends.native.llama import DecodeRows, NativeLlama


class StepOps(Protocol):
    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None,
                 weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + delta, rms_norm(x + delta) * weight)``; ``x`` may be updated in place."""

    def rope_write(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        """Rope on q and k of ``qkv [count, (heads + 2 kv) * head_dim]``, k and v written to the
        cache; returns q ``[count, heads * head_dim]``."""

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """``silu(gate) * up`` of ``gate_up [count, 2 * inter]``."""

    def decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """The decode rows' attention, ``q [n, heads * head_dim]`` -> ``[n, heads * head_dim]``."""


class TorchOps:
    """Torch ops. Decode attention is SDPA over the step's ``width`` columns of every row with
    an additive per-row mask, the query heads sharing a KV head packed as that head's queries
    (``[n, kv, group, head_dim]``), so grouped-query attention reads K/V without repeating them."""

    def __init__(self, model: NativeLlama, positions: torch.Tensor, owners: torch.Tensor,
                 decode: DecodeRows | None) -> None:
        self.m = model
        self.cos = model.cos.index_select(0, positions)[:, None, :]
        self.sin = model.sin.index_select(0, positions)[:, None, :]
        kv = model.kv_heads
        self.write = ((owners[:, None] * kv + model.kv_head_index) * model.n_positions + positions[:, None]).view(-1)
        self.decode = decode
        if decode is not None:
            # Column j of a row is valid iff j <= that row's position; stale data lies beyond. An
            # additive mask built once per step: SDPA takes it 20-30 % faster than a boolean one
            # (which it converts in every layer), and adding 0.0 leaves every score as it was.
            n, width = decode.rows.shape[0], decode.width
            self.mask = torch.zeros((n, 1, 1, width), dtype=model.embed.dtype, device=model.embed.device)
            invalid = (model.columns[:width] > decode.positions[:, None]).view(n, 1, 1, width)
            self.mask.masked_fill_(invalid, float("-inf"))

    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None,
                 weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if delta is not None:
            x = x + delta
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

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        m, decode = self.m, self.decode
        if decode is None:
            raise ValueError("decode_attention in a step without decode rows")
        n, width, first = decode.rows.shape[0], decode.width, decode.first
        if first is not None:
            keys = m.keys[layer, first : first + n, :, :width]
            values = m.values[layer, first : first + n, :, :width]
        else:
            keys = m.keys[layer, :, :, :width].index_select(0, decode.rows)
            values = m.values[layer, :, :, :width].index_select(0, decode.rows)
        grouped = q.reshape(n, m.kv_heads, m.group, m.head_dim)
        return F.scaled_dot_product_attention(grouped, keys, values, attn_mask=self.mask).reshape(n, -1)


class KernelOps:
    """The CPU kernels. Decode attention reads each row to its own position (no mask, no width)."""

    def __init__(self, model: NativeLlama, kernels: CpuKernels, positions: torch.Tensor, owners: torch.Tensor,
                 decode: DecodeRows | None) -> None:
        self.m, self.k = model, kernels
        self.positions, self.owners = positions.contiguous(), owners.contiguous()
        if decode is not None:
            self.rows = decode.rows.contiguous()
            self.lengths = decode.positions + 1

    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None,
                 weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x is the step's own hidden state (embedding output, then updated here only): in place is safe.
        return x, self.k.add_rms_norm(x, delta, weight, self.m.eps)

    def rope_write(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        m = self.m
        return self.k.rope_write(qkv.contiguous(), m.cos, m.sin, self.positions, self.owners, m.keys[layer],
                                 m.values[layer], m.heads)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        return self.k.silu_mul(gate_up.contiguous())

    def decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        m = self.m
        return self.k.decode_attention(q, m.keys[layer], m.values[layer], self.rows, self.lengths, m.scale)
