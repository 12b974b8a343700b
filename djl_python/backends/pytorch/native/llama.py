"""The llama family (llama, mistral, SmolLM2) on packed KV rows, with fused weights.

Why: on a CPU a small model's decode step pays a dispatch and an OpenMP fork/join for
every op, not only for its matmuls, and the Hugging Face forward issues many more ops
than its matmuls, recomputes the rotary tables and builds mask objects every step. Here
one layer is 4 matmuls (QKV, output, gate-up, down), the rotary tables are computed
once, and attention reads the KV rows in place. docs/performance.md has the op counts
and what is left.

Same arithmetic as ``transformers``' ``LlamaForCausalLM`` (the reference the tests hold it
to): the same RMSNorm formula (fp32 statistics, weight applied in the model dtype), the
rotary tables produced by the model's own rotary module (so every supported rope scaling
gives identical cos/sin), ``rotate_half`` rope, ``F.scaled_dot_product_attention`` with
the default ``1/sqrt(head_dim)`` scale, SiLU-gated MLP. Fusing Q/K/V and gate/up only
concatenates output rows, so each output element is the same dot product as before; the
matmul kernel may block it differently, which moves logits by float rounding (~1e-6
relative in fp32), not tokens, on the models the tests run.

Weights: on a CPU whose oneDNN takes the dtype, the fused weights are packed once, in the
CPU kernels' panel layout where they have a matmul for the dtype, else in oneDNN's, and the
Hugging Face module's linears released (:mod:`.linear`), so one copy stays in memory and the
module can no longer run its own forward.

A step (:meth:`NativeLlama.step`) is one forward over the decode rows' tokens and the
joining prompts' tokens packed together: every matmul runs once on all of them, prompts
are never padded, attention is per part (decode rows against their KV rows, each prompt
causally on itself). The norms, rope, K/V writes, SiLU product and decode attention are
the step's operations (:mod:`.step_ops`): the CPU kernels of :mod:`.cpu_kernels` where they
were built and take the model (CPU, fp32/bf16), else torch ops with SDPA. Both compute the
arithmetic above; they differ by summation order only. Where the kernels run and every weight
is in their panels, the layer loop itself runs as one C call (:mod:`.layer_stack`): the same
calls in the same order, so the same bits.

KV layout: ``keys``/``values`` are ``[layers, rows, kv_heads, n_positions, head_dim]``,
row ``r`` of every layer belonging to one sequence (the backend keeps occupied rows
packed at ``0..n-1``, see :mod:`..slot_rows`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from djl_python.backends.pytorch.native import layer_stack
from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels
from djl_python.backends.pytorch.native.linear import linear as _linear
from djl_python.backends.pytorch.native.linear import packed_dtype, packs_on, prepack, release
from djl_python.backends.pytorch.native.panel_linear import PanelWeight
from djl_python.backends.pytorch.native.step_ops import KernelOps, StepOps, TorchOps

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
    # A partial rotary makes the cos/sin tables narrower than a head; the rope of both the
    # torch ops and the kernels rotates whole heads (transformers 5 keeps the factor in
    # rope_parameters, 4.x on the config).
    partial = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
    partial = partial if partial is not None else getattr(config, "partial_rotary_factor", None)
    if partial is not None and float(partial) != 1.0:
        return f"partial_rotary_factor {partial} (the native rope rotates whole heads)"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    return None


@dataclass
class _Layer:
    """One decoder layer's weights, fused: ``qkv`` rows are Q, then K, then V; ``gate_up`` rows
    are gate, then up."""

    attn_norm: torch.Tensor
    qkv: torch.Tensor | PanelWeight
    qkv_bias: torch.Tensor | None
    o: torch.Tensor | PanelWeight
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor | PanelWeight
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor | PanelWeight
    down_bias: torch.Tensor | None


@dataclass(frozen=True)
class DecodeRows:
    """The decode part of a step, on the device: ``tokens [n]`` go to ``positions [n]`` of
    ``rows [n]`` (ascending; ``first`` is ``rows[0]`` when they are consecutive, so they are
    sliced, not gathered), attending ``width`` columns where SDPA runs."""

    rows: torch.Tensor
    first: int | None
    tokens: torch.Tensor
    positions: torch.Tensor
    width: int


def _fuse(*linears: torch.nn.Linear) -> torch.Tensor:
    """The linears' weights stacked by output rows; each linear's weight then becomes a view
    of its rows, so the Hugging Face model stays usable and no weight is held twice."""
    fused = torch.cat([lin.weight for lin in linears]).contiguous()
    start = 0
    for lin in linears:
        lin.weight = torch.nn.Parameter(fused[start : start + lin.out_features], requires_grad=False)
        start += lin.out_features
    return fused


def _weight(pack: bool, kernels: CpuKernels | None, *linears: torch.nn.Linear) -> torch.Tensor | PanelWeight:
    """The native forward's weight for ``linears`` (stacked by output rows when several).

    Packed: a copy in the layout of the fastest matmul here (:func:`.linear.prepack`: the
    kernels' panels or oneDNN's), and the Hugging Face linears are released (one copy in
    memory). Unpacked: the linears become views of the stacked weight (:func:`_fuse`)."""
    if not pack:
        return _fuse(*linears) if len(linears) > 1 else linears[0].weight
    stacked = torch.cat([lin.weight for lin in linears]) if len(linears) > 1 else linears[0].weight
    packed = prepack(stacked, kernels)
    del stacked
    for lin in linears:
        release(lin)
    return packed


def _cat_bias(*linears: torch.nn.Linear) -> torch.Tensor | None:
    """The linears' biases stacked (zeros for a linear without one), ``None`` when none has
    one. Each existing bias then becomes a view of its rows, as :func:`_fuse` does for
    weights, so no bias is held twice (a packed load releases the linears afterwards)."""
    if all(lin.bias is None for lin in linears):
        return None
    fused = torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                       for lin in linears]).contiguous()
    start = 0
    for lin in linears:
        if lin.bias is not None:
            lin.bias = torch.nn.Parameter(fused[start : start + lin.out_features], requires_grad=False)
        start += lin.out_features
    return fused


class NativeLlama:
    """A llama-family model's forward on ``max_rows`` KV rows. Build with :meth:`from_hf`.

    Not an ``nn.Module``: it holds inference weights and the KV rows and nothing else.
    Every method must run under ``torch.inference_mode()`` (the backend's methods do).
    """

    def __init__(
        self, model: Any, max_rows: int, n_positions: int, prepack_weights: bool = True,
        kernels: CpuKernels | None = None, stack: bool = True,
    ) -> None:
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
        # Packed: oneDNN's layout on CPUs whose oneDNN takes the dtype (see .linear). The
        # Hugging Face decoder's linears are then released and only this forward can run.
        self.packed = prepack_weights and packs_on(self.embed.device.type, self.embed.dtype)
        pack = self.packed
        # Widened packing (.linear): biases are held in fp32 too, added inside the fp32 GEMM.
        widen = pack and packed_dtype(self.embed.device.type, self.embed.dtype) != self.embed.dtype
        self.widened = widen

        def _b(bias: torch.Tensor | None) -> torch.Tensor | None:
            return bias.float() if bias is not None and widen else bias

        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv_bias = _b(_cat_bias(attn.q_proj, attn.k_proj, attn.v_proj))
            gate_up_bias = _b(_cat_bias(mlp.gate_proj, mlp.up_proj))
            o_bias, down_bias = _b(attn.o_proj.bias), _b(mlp.down_proj.bias)
            self.layers.append(_Layer(
                attn_norm=layer.input_layernorm.weight,
                qkv=_weight(pack, kernels, attn.q_proj, attn.k_proj, attn.v_proj),
                qkv_bias=qkv_bias,
                o=_weight(pack, kernels, attn.o_proj),
                o_bias=o_bias,
                mlp_norm=layer.post_attention_layernorm.weight,
                gate_up=_weight(pack, kernels, mlp.gate_proj, mlp.up_proj),
                gate_up_bias=gate_up_bias,
                down=_weight(pack, kernels, mlp.down_proj),
                down_bias=down_bias,
            ))
        self.lm_head_bias = _b(getattr(model.lm_head, "bias", None))
        if not pack:
            self.lm_head = model.lm_head.weight  # the embedding itself when tied
        elif model.lm_head.weight is self.embed:  # tied: the embedding stays, the head is a packed copy
            self.lm_head = prepack(self.embed, kernels)
        else:
            self.lm_head = _weight(pack, kernels, model.lm_head)
        self.layout = self._layout()
        dtype, device = self.embed.dtype, self.embed.device
        positions = torch.arange(n_positions, device=device)
        probe = torch.empty(1, dtype=dtype, device=device)
        cos, sin = inner.rotary_emb(probe, positions[None, :])  # the model's own tables, [1, P, D]
        if cos.shape[-1] != self.head_dim:  # llama_support refuses the configs known to do this
            raise ValueError(f"native llama cannot run this model: its rotary tables are {cos.shape[-1]} wide, "
                             f"a head {self.head_dim}")
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        self.columns = positions
        self.kv_head_index = torch.arange(self.kv_heads, device=device)
        shape = (len(self.layers), max_rows, self.kv_heads, n_positions, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        # Per-layer views with one row per (KV row, head, position), for prefill and decode writes.
        self.keys_flat = [self.keys[i].view(-1, self.head_dim) for i in range(len(self.layers))]
        self.values_flat = [self.values[i].view(-1, self.head_dim) for i in range(len(self.layers))]
        self.scale = self.head_dim ** -0.5  # SDPA's default scale
        # Per-step operations: the CPU kernels where they take this model, else torch (.step_ops).
        refusal = "no kernels" if kernels is None else kernels.refusal(device, dtype, self.group, self.head_dim)
        self._kernels = kernels if refusal is None else None
        # The attention and rope kernels, bound (and their contract checked) once for this cache.
        self._bound = None if self._kernels is None else \
            self._kernels.bind(self.keys, self.values, self.cos, self.sin, self.heads)
        self.ops = "cpu-kernels" if refusal is None else f"torch ({refusal})"
        # The decoder layers as one C call where every weight is in panels (.layer_stack); the
        # Python loop of step() otherwise. Both compute the same bits.
        why_not = layer_stack.refusal(self.layers, self._bound) if stack else "stack=False"
        self._stack = None if why_not is not None or kernels is None else layer_stack.LayerStack(
            kernels, self._bound, self.layers, self.eps, self.scale)
        self.stack = "one call" if self._stack is not None else f"python loop ({why_not})"
        self._built_stack = self._stack

    @classmethod
    def from_hf(
        cls, model: Any, max_rows: int, n_positions: int, prepack_weights: bool = True,
        kernels: CpuKernels | None = None, stack: bool = True,
    ) -> NativeLlama:
        """Build from a loaded ``LlamaForCausalLM``/``MistralForCausalLM``; ``ValueError`` with the
        reason when :func:`llama_support` refuses its config. ``stack=False`` keeps the Python
        layer loop where the layer stack could run (tests and benchmarks compare the two)."""
        reason = llama_support(model.config)
        if reason is not None:
            raise ValueError(f"native llama cannot run this model: {reason}")
        return cls(model, max_rows, n_positions, prepack_weights, kernels, stack)

    def _layout(self) -> str:
        """The weights' layout, for the backend's info: ``plain``, ``panels`` (the CPU kernels'
        matmul), ``onednn-packed`` (widened to fp32 or not), or both packings when some weight
        could not take the panels (a bfloat16 weight of odd width)."""
        if not self.packed:
            return "plain"
        weights = [w for layer in self.layers for w in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        panels = sum(isinstance(w, PanelWeight) for w in [*weights, self.lm_head])
        onednn = "onednn-packed, widened to fp32" if self.widened else "onednn-packed"
        if panels == len(weights) + 1:
            return "panels"
        return onednn if not panels else f"panels and {onednn}"

    def use_stack(self, on: bool) -> None:
        """From the next step on, run the decoder layers as one call (where the stack was built) or
        by the Python loop: one copy of the weights, run both ways (``bench.layer_stack_ab``)."""
        self._stack = self._built_stack if on else None

    def nbytes(self) -> int:
        """Bytes held by the KV rows."""
        return self.keys.nbytes + self.values.nbytes

    def own_bytes(self) -> int:
        """Bytes of weights this forward holds outside the Hugging Face model's parameters: with
        those, all the weight memory the backend holds. Unpacked, 0 (the module's linears are
        views of the fused weights and biases). Packed, the packed weights and every linear's
        bias (the module's linears were released; a tied LM head is a packed copy)."""
        if not self.packed:
            return 0
        held = [w for layer in self.layers for w in (layer.qkv, layer.qkv_bias, layer.o, layer.o_bias,
                                                     layer.gate_up, layer.gate_up_bias, layer.down, layer.down_bias)]
        return sum(w.nbytes for w in [*held, self.lm_head, self.lm_head_bias] if w is not None)

    def prefill(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run each prompt into its row (columns ``0..len-1``); return the logits at each
        prompt's last position, ``[n, vocab]`` float32, in the order given. :meth:`step`
        with prompts only."""
        return self.step(None, (rows, prompts))[1]

    def decode(
        self, rows: torch.Tensor, first: int | None, tokens: torch.Tensor, positions: torch.Tensor, width: int
    ) -> torch.Tensor:
        """Append ``tokens [n]`` at ``positions [n]`` of ``rows`` and attend columns ``0..width-1``;
        return next-token logits ``[n, vocab]`` float32. :meth:`step` with decode rows only."""
        return self.step(DecodeRows(rows, first, tokens, positions, width), None)[0]

    def step(
        self, decode: DecodeRows | None, prefill: tuple[Sequence[int], Sequence[Sequence[int]]] | None,
        starts: Sequence[int] | None = None, every_position: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One forward for a step: decode rows (one token each) and prompts (each into its row
        from column ``starts[i]``, 0 by default: the columns before it already hold the prompt's
        first ``starts[i]`` tokens, a cached prefix), every matmul on all their tokens at once. Returns (decode logits
        ``[n, vocab]``, prompt last-position logits ``[p, vocab]``), float32, ``None`` for a
        part not given; each part's logits are what its own call would return, up to float
        rounding (a matmul may block a larger batch differently). ``every_position``: the prompt
        part returns the logits of every computed token, in order (speculative verification).

        Decode rows come first in the packed batch, then the prompts back to back, never
        padded (a prefill costs its real tokens whatever the mix of lengths). Attention
        (:mod:`.step_ops`): each decode row over its row to its position, each prompt
        causally on itself, read back from the row just written. The
        caller (the backend) has checked that every row exists, decode ``0 <= positions <
        min(width, n_positions)``, prompt lengths ``<= n_positions`` and the prompts' rows
        distinct from the decode rows: the decode kernel reads memory on that promise.
        """
        if decode is None and prefill is None:
            raise ValueError("step needs decode rows or prompts")
        device = self.embed.device
        n = 0 if decode is None else decode.rows.shape[0]
        parts_tokens, parts_pos, parts_owner = [], [], []
        if decode is not None:
            parts_tokens.append(decode.tokens)
            parts_pos.append(decode.positions)
            parts_owner.append(decode.rows)
        spans: list[tuple[int, int]] = []
        prompt_rows: Sequence[int] = ()
        last = None
        first_columns: Sequence[int] = ()
        if prefill is not None:
            prompt_rows, prompts = prefill
            first_columns = list(starts) if starts is not None else [0] * len(prompts)
            lengths = [len(p) - start for p, start in zip(prompts, first_columns)]  # tokens computed
            total = sum(lengths)
            ends = [n + end for end in itertools.accumulate(lengths)]
            spans = [(end - length, end) for end, length in zip(ends, lengths)]
            # One host tensor, one copy to the device: tokens, positions, each token's row, last indices.
            flat: list[int] = [token for prompt, start in zip(prompts, first_columns) for token in prompt[start:]]
            flat.extend(pos for prompt, start in zip(prompts, first_columns) for pos in range(start, len(prompt)))
            flat.extend(row for row, length in zip(prompt_rows, lengths) for _ in range(length))
            # The rows that reach the LM head: each prompt's last token, or every computed token.
            flat.extend(range(n, n + total) if every_position else (end - 1 for end in ends))
            packed = torch.tensor(flat, dtype=torch.long).to(device, non_blocking=True)
            parts_tokens.append(packed[:total])
            parts_pos.append(packed[total : 2 * total])
            parts_owner.append(packed[2 * total : 3 * total])
            last = packed[3 * total :]
        tokens, pos, owner = (parts[0] if len(parts) == 1 else torch.cat(parts)
                              for parts in (parts_tokens, parts_pos, parts_owner))
        ops: StepOps = KernelOps(self, self._kernels, self._bound, pos, owner) if self._bound is not None \
            else TorchOps(self, pos, owner, decode, spans, prompt_rows, first_columns)
        x, delta = F.embedding(tokens, self.embed), None
        if self._stack is not None and isinstance(ops, KernelOps):
            delta = self._stack.run(ops.step, x)  # the loop below, in one C call
        else:
            for i, layer in enumerate(self.layers):
                x, h = ops.add_norm(x, delta, layer.attn_norm)
                attn = ops.attention(i, ops.rope_write(i, _linear(h, layer.qkv, layer.qkv_bias)))
                delta = _linear(attn, layer.o, layer.o_bias)
                x, h = ops.add_norm(x, delta, layer.mlp_norm)
                delta = _linear(ops.silu_mul(_linear(h, layer.gate_up, layer.gate_up_bias)), layer.down,
                                layer.down_bias)
        # Only the rows that produce a token reach the final norm and the LM head: the decode
        # rows and each prompt's last token (the norm is per row).
        if last is not None:
            keep = last if n == 0 else torch.cat([torch.arange(n, device=device), last])
            x, delta = x.index_select(0, keep), delta.index_select(0, keep)
        _, h = ops.add_norm(x, delta, self.final_norm)
        logits = _linear(h, self.lm_head, self.lm_head_bias).float()
        if last is None:
            return logits, None
        return (logits[:n] if n else None), logits[n:]

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy columns ``0..length-1`` of row ``src`` into row ``dst`` in every layer."""
        self.keys[:, dst, :, :length].copy_(self.keys[:, src, :, :length])
        self.values[:, dst, :, :length].copy_(self.values[:, src, :, :length])
