"""The llama family (llama, mistral, SmolLM2) on packed KV rows, with fused weights.

Why: on a CPU a small model's decode step pays a dispatch and an OpenMP fork/join for
every op, not only for its matmuls (SmolLM2-135M, batch 16: the Hugging Face forward
issues 211 matmuls among 6,755 aten calls per step, recomputes the rotary tables and
builds mask objects every step). Here one layer is 4 matmuls (QKV, output, gate-up,
down; 121 per step with the LM head, 5,119 aten calls), the rotary tables are computed
once, and attention reads the KV rows in place. docs/performance.md has what is left.

Same arithmetic as ``transformers``' ``LlamaForCausalLM`` (the reference the tests hold it
to): the same RMSNorm formula (fp32 statistics, weight applied in the model dtype), the
rotary tables produced by the model's own rotary module (so every supported rope scaling
gives identical cos/sin), ``rotate_half`` rope, ``F.scaled_dot_product_attention`` with
the default ``1/sqrt(head_dim)`` scale, SiLU-gated MLP. Fusing Q/K/V and gate/up only
concatenates output rows, so each output element is the same dot product as before; the
matmul kernel may block it differently, which moves logits by float rounding (~1e-6 in
fp32), not tokens, on the models the tests run.

KV layout: ``keys``/``values`` are ``[layers, rows, kv_heads, n_positions, head_dim]``,
row ``r`` of every layer belonging to one sequence (the backend keeps occupied rows
packed at ``0..n-1``, see :mod:`..slot_rows`). Decode attention packs the query heads
that share a KV head as that head's queries (``[n, kv_heads, group, head_dim]``), so
grouped-query attention reads K/V without repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

LLAMA_FAMILY = frozenset({"llama", "mistral"})
# Rope types whose cos/sin depend on the position only (one table serves every step).
_TABLE_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})


def llama_support(config: Any) -> str | None:
    """``None`` when :class:`NativeLlama` implements ``config`` exactly, else the reason it does not."""
    if config.model_type not in LLAMA_FAMILY:
        return f"model_type {config.model_type!r} is not one of {sorted(LLAMA_FAMILY)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} (only silu)"
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    if rope_type not in _TABLE_ROPE_TYPES:
        return f"rope_type {rope_type!r} depends on the sequence length (only {sorted(_TABLE_ROPE_TYPES)})"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    return None


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``; on the CPU a 2-D ``x`` (a decode step's few rows) is computed as
    ``weight @ x.T`` instead.

    Why: for a few rows against a transposed weight, MKL's sgemm runs 2-4x below what the
    weight's memory traffic allows on some CPUs. Measured on a 2-core AMD EPYC (AVX2), fp32,
    8 rows: the LM head ``[49152, 576]`` 49 ms as ``F.linear``, 13 ms as ``weight @ x.T``; one
    SmolLM2 decode step's matmuls 178 -> 74 ms at 8 rows, 188 -> 96 ms at 16, 316 -> 184 ms at
    32. Every output element is the same dot product; the kernel may sum it in another order
    (at most ~1e-4 apart in fp32 at 8 rows, bit-identical at 16 and 32 in that measurement).
    """
    if x.dim() != 2 or x.device.type != "cpu":
        return F.linear(x, weight, bias)
    y = torch.mm(weight, x.t()).t().contiguous()
    return y if bias is None else y + bias


@dataclass
class _Layer:
    """One decoder layer's weights, fused: ``qkv`` rows are Q, then K, then V; ``gate_up`` rows
    are gate, then up."""

    attn_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _fuse(*linears: torch.nn.Linear) -> torch.Tensor:
    """The linears' weights stacked by output rows; each linear's weight then becomes a view
    of its rows, so the Hugging Face model stays usable and no weight is held twice."""
    fused = torch.cat([lin.weight for lin in linears]).contiguous()
    start = 0
    for lin in linears:
        lin.weight = torch.nn.Parameter(fused[start : start + lin.out_features], requires_grad=False)
        start += lin.out_features
    return fused


def _cat_bias(*linears: torch.nn.Linear) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                      for lin in linears]).contiguous()


class NativeLlama:
    """A llama-family model's forward on ``max_rows`` KV rows. Build with :meth:`from_hf`.

    Not an ``nn.Module``: it holds inference weights and the KV rows and nothing else.
    Every method must run under ``torch.inference_mode()`` (the backend's methods do).
    """

    def __init__(self, model: Any, max_rows: int, n_positions: int) -> None:
        config = model.config
        inner = model.model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.group = self.heads // self.kv_heads
        self.eps = inner.norm.variance_epsilon
        self.n_positions = n_positions
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm.weight
        self.lm_head = model.lm_head.weight  # the embedding itself when tied
        self.lm_head_bias = getattr(model.lm_head, "bias", None)
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                attn_norm=layer.input_layernorm.weight,
                qkv=_fuse(attn.q_proj, attn.k_proj, attn.v_proj),
                qkv_bias=_cat_bias(attn.q_proj, attn.k_proj, attn.v_proj),
                o=attn.o_proj.weight,
                o_bias=attn.o_proj.bias,
                mlp_norm=layer.post_attention_layernorm.weight,
                gate_up=_fuse(mlp.gate_proj, mlp.up_proj),
                gate_up_bias=_cat_bias(mlp.gate_proj, mlp.up_proj),
                down=mlp.down_proj.weight,
                down_bias=mlp.down_proj.bias,
            ))
        dtype, device = self.embed.dtype, self.embed.device
        positions = torch.arange(n_positions, device=device)
        probe = torch.empty(1, dtype=dtype, device=device)
        cos, sin = inner.rotary_emb(probe, positions[None, :])  # the model's own tables, [1, P, D]
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        self.columns = positions
        self.kv_head_index = torch.arange(self.kv_heads, device=device)
        shape = (len(self.layers), max_rows, self.kv_heads, n_positions, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        # Per-layer views with one (row, head, position) triple per row, for decode writes.
        self._keys_flat = [self.keys[i].view(-1, self.head_dim) for i in range(len(self.layers))]
        self._values_flat = [self.values[i].view(-1, self.head_dim) for i in range(len(self.layers))]

    @classmethod
    def from_hf(cls, model: Any, max_rows: int, n_positions: int) -> NativeLlama:
        """Build from a loaded ``LlamaForCausalLM``/``MistralForCausalLM``; ``ValueError`` with the
        reason when :func:`llama_support` refuses its config."""
        reason = llama_support(model.config)
        if reason is not None:
            raise ValueError(f"native llama cannot run this model: {reason}")
        return cls(model, max_rows, n_positions)

    def nbytes(self) -> int:
        """Bytes held by the KV rows."""
        return self.keys.nbytes + self.values.nbytes

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # LlamaRMSNorm exactly: statistics in fp32, the weight applied in the model dtype.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _mlp(self, x: torch.Tensor, layer: _Layer) -> torch.Tensor:
        gate, up = _linear(self._norm(x, layer.mlp_norm), layer.gate_up, layer.gate_up_bias).chunk(2, dim=-1)
        return x + _linear(F.silu(gate) * up, layer.down, layer.down_bias)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(self._norm(x, self.final_norm), self.lm_head, self.lm_head_bias).float()

    def prefill(self, rows: torch.Tensor, first: int | None, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Run right-padded prompts ``tokens [n, L]`` into ``rows`` (columns ``0..L-1``); return
        the logits at each row's ``last`` position, ``[n, vocab]`` float32."""
        n, length = tokens.shape
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        cos, sin = self.cos[:length, None, :], self.sin[:length, None, :]  # broadcast over heads
        x = F.embedding(tokens, self.embed)
        for i, layer in enumerate(self.layers):
            qkv = F.linear(self._norm(x, layer.attn_norm), layer.qkv, layer.qkv_bias).view(n, length, -1, dim)
            qk = self._rope(qkv[:, :, : heads + kv], cos, sin)
            q = qk[:, :, :heads].transpose(1, 2)
            k = qk[:, :, heads:].transpose(1, 2)
            v = qkv[:, :, heads + kv :].transpose(1, 2)
            if first is not None:
                self.keys[i, first : first + n, :, :length] = k
                self.values[i, first : first + n, :, :length] = v
            else:
                self.keys[i][rows, :, :length] = k
                self.values[i][rows, :, :length] = v
            # A prompt attends to itself only; right padding only ever follows real tokens.
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != heads)
            x = x + F.linear(attn.transpose(1, 2).reshape(n, length, heads * dim), layer.o, layer.o_bias)
            x = self._mlp(x, layer)
        return self._logits(x[torch.arange(n, device=x.device), last])

    def decode(
        self, rows: torch.Tensor, first: int | None, tokens: torch.Tensor, positions: torch.Tensor, width: int
    ) -> torch.Tensor:
        """Append ``tokens [n]`` at ``positions [n]`` of ``rows`` and attend columns ``0..width-1``;
        return next-token logits ``[n, vocab]`` float32. ``first`` is set when ``rows`` is
        ``first..first+n-1`` (rows are sliced, not gathered)."""
        n = tokens.shape[0]
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        cos = self.cos.index_select(0, positions)[:, None, :]
        sin = self.sin.index_select(0, positions)[:, None, :]
        # Column j of a row is valid iff j <= that row's position; stale data lies beyond.
        mask = (self.columns[:width] <= positions[:, None]).view(n, 1, 1, width)
        write = ((rows[:, None] * kv + self.kv_head_index) * self.n_positions + positions[:, None]).view(-1)
        x = F.embedding(tokens, self.embed)
        for i, layer in enumerate(self.layers):
            qkv = _linear(self._norm(x, layer.attn_norm), layer.qkv, layer.qkv_bias).view(n, -1, dim)
            qk = self._rope(qkv[:, : heads + kv], cos, sin)
            self._keys_flat[i].index_copy_(0, write, qk[:, heads:].reshape(n * kv, dim))
            self._values_flat[i].index_copy_(0, write, qkv[:, heads + kv :].reshape(n * kv, dim))
            if first is not None:
                keys = self.keys[i, first : first + n, :, :width]
                values = self.values[i, first : first + n, :, :width]
            else:
                keys = self.keys[i, :, :, :width].index_select(0, rows)
                values = self.values[i, :, :, :width].index_select(0, rows)
            # The query heads of one KV head become that head's queries: no K/V repeat.
            q = qk[:, :heads].reshape(n, kv, self.group, dim)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = x + _linear(attn.reshape(n, heads * dim), layer.o, layer.o_bias)
            x = self._mlp(x, layer)
        return self._logits(x)

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy columns ``0..length-1`` of row ``src`` into row ``dst`` in every layer."""
        self.keys[:, dst, :, :length].copy_(self.keys[:, src, :, :length])
        self.values[:, dst, :, :length].copy_(self.values[:, src, :, :length])
