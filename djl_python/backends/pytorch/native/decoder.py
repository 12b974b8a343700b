"""The native forward: a decoder-only model on packed KV rows, with fused weights, for every
architecture :mod:`.architectures` maps onto its one layer shape (llama, mistral, qwen2,
gpt_neox, gptj, gpt2, gpt_bigcode, opt, bloom).

Why: on a CPU a small model's decode step pays a dispatch and an OpenMP fork/join for
every op, not only for its matmuls, and the Hugging Face forward issues many more ops
than its matmuls, recomputes the rotary tables and builds mask objects every step. Here
one layer is 4 matmuls (QKV, output, up or gate-up, down), the rotary tables are computed
once, and attention reads the KV rows in place. docs/performance.md has the op counts
and what is left.

Same arithmetic as the Hugging Face forward (the reference the tests hold it to): RMSNorm as
``LlamaRMSNorm`` (fp32 statistics, weight applied in the model dtype) or ``nn.LayerNorm``,
the model's own rotary tables (so every supported rope scaling gives identical cos/sin),
``rotate_half`` rope on the heads as :mod:`.architectures` lays them out, attention at the
model's own scale, the model's MLP and residual order. Fusing Q/K/V and gate/up only
concatenates output rows, so each output element is the same dot product as before; the
matmul kernel may block it differently, which moves logits by float rounding (~1e-6
relative in fp32), not tokens, on the models the tests run.

Weights: on a CPU whose oneDNN takes the dtype, the fused weights are packed once, in the
CPU kernels' panel layout where they have a matmul for the dtype, else in oneDNN's, and the
Hugging Face module's linears released (:mod:`.linear`), so one copy stays in memory and the
module can no longer run its own forward. Unpacked (CUDA), plain linears become views of the
fused weights (so the llama family's module stays usable); a weight that must be transposed or
reordered (:mod:`.architectures`) is copied and its module released.

A step (:meth:`NativeDecoder.step`) is one forward over the decode rows' tokens and the
joining prompts' tokens packed together: every matmul runs once on all of them, prompts
are never padded, attention is per part (decode rows against their KV rows, each prompt
causally on itself). The norms, rope, K/V writes, activations and decode attention are
the step's operations (:mod:`.step_ops`): the CPU kernels of :mod:`.cpu_kernels` where they
were built and take the model (CPU, fp32/bf16), else torch ops with SDPA. Both compute the
arithmetic above; they differ by summation order (and the kernels' GELU by its approximation
of tanh or erf). Where the kernels run and every weight is in their panels, the layer loop
itself runs as one C call (:mod:`.layer_stack`): the same calls in the same order, so the
same bits.

KV layout: ``keys``/``values`` are ``[layers, rows, kv_heads, n_positions, head_dim]``,
row ``r`` of every layer belonging to one sequence (the backend keeps occupied rows
packed at ``0..n-1``, see :mod:`..slot_rows`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from djl_python.backends.pytorch.native import architectures, layer_stack
from djl_python.backends.pytorch.native.architectures import Recipe, Weight, native_support
from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels
from djl_python.backends.pytorch.native.linear import linear as _linear
from djl_python.backends.pytorch.native.linear import packed_dtype, packs_on, prepack, release
from djl_python.backends.pytorch.native.panel_linear import PanelWeight
from djl_python.backends.pytorch.native.step_ops import KernelOps, StepOps, TorchOps


@dataclass
class _Layer:
    """One decoder layer's weights, fused: ``qkv`` rows are Q, then K, then V; ``gate_up`` rows
    are gate, then up, for a gated MLP, and the up projection alone otherwise. Norm biases are
    ``None`` for RMSNorm; ``mlp_norm`` is ``None`` where the MLP reads the attention's norm."""

    attn_norm: torch.Tensor
    attn_norm_bias: torch.Tensor | None
    qkv: torch.Tensor | PanelWeight
    qkv_bias: torch.Tensor | None
    o: torch.Tensor | PanelWeight
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor | None
    mlp_norm_bias: torch.Tensor | None
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


def _cat_bias(*linears: torch.nn.Linear) -> torch.Tensor | None:
    """The linears' biases stacked (zeros for a linear without one), ``None`` when none has
    one. Each existing bias then becomes a view of its rows, as :func:`_fuse` does for
    weights, so no bias is held twice."""
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


def _take(weight: Weight, pack: bool, kernels: CpuKernels | None
          ) -> tuple[torch.Tensor | PanelWeight, torch.Tensor | None]:
    """The native forward's weight and bias for ``weight`` (module docstring, "Weights"):
    packed, or the module's own tensors (fused views for plain linears), or an unpacked copy
    where rows must be transposed or reordered. Modules whose weight was copied are released."""
    linears = weight.modules
    plain = weight.order is None and all(type(m) is torch.nn.Linear for m in linears)
    if not pack and plain:
        return (_fuse(*linears) if len(linears) > 1 else linears[0].weight), _cat_bias(*linears)
    bias = weight.bias()
    rows = weight.rows()
    taken = prepack(rows, kernels) if pack else rows.contiguous()
    del rows
    if bias is not None:
        bias = bias.contiguous()
    for module in linears:
        release(module)
    return taken, bias


def _storage(t: torch.Tensor | PanelWeight) -> int | None:
    """The address of ``t``'s storage (shared by its views); ``None`` for a packed weight."""
    if isinstance(t, PanelWeight) or t.is_mkldnn:
        return None
    return t.untyped_storage().data_ptr()


class NativeDecoder:
    """A decoder-only model's forward on ``max_rows`` KV rows. Build with :meth:`from_hf`.

    Not an ``nn.Module``: it holds inference weights and the KV rows and nothing else.
    Every method must run under ``torch.inference_mode()`` (the backend's methods do).
    """

    def __init__(
        self, model: Any, max_rows: int, n_positions: int, prepack_weights: bool = True,
        kernels: CpuKernels | None = None, stack: bool = True,
    ) -> None:
        read = architectures.read(model, n_positions)
        self.recipe: Recipe = read.recipe
        # The MLP's activation as the Hugging Face model computes it (torch ops).
        self.act_fn: Callable[[torch.Tensor], torch.Tensor] = ACT2FN[read.recipe.activation]
        self.heads, self.kv_heads, self.head_dim = read.heads, read.kv_heads, read.head_dim
        self.group = self.heads // self.kv_heads
        self.eps = read.eps
        self.scale = read.scale
        self.n_positions = n_positions
        self.embed = read.embed
        self.position_table, self.position_offset = read.positions, read.position_offset
        self.final_norm, self.final_norm_bias = read.final_norm, read.final_norm_bias
        self.embed_norm, self.alibi = read.embed_norm, read.alibi  # BLOOM's (None elsewhere)
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
        for layer in read.layers:
            qkv, qkv_bias = _take(layer.qkv, pack, kernels)
            o, o_bias = _take(layer.o, pack, kernels)
            gate_up, gate_up_bias = _take(layer.up, pack, kernels)
            down, down_bias = _take(layer.down, pack, kernels)
            self.layers.append(_Layer(
                attn_norm=layer.attn_norm, attn_norm_bias=layer.attn_norm_bias, qkv=qkv, qkv_bias=_b(qkv_bias),
                o=o, o_bias=_b(o_bias), mlp_norm=layer.mlp_norm, mlp_norm_bias=layer.mlp_norm_bias,
                gate_up=gate_up, gate_up_bias=_b(gate_up_bias), down=down, down_bias=_b(down_bias),
            ))
        head = read.lm_head.modules[0]
        if head.weight is self.embed:  # tied: the embedding stays; packed, the head is a packed copy
            self.lm_head, lm_head_bias = (prepack(self.embed, kernels) if pack else self.embed), read.lm_head.bias()
        else:
            self.lm_head, lm_head_bias = _take(read.lm_head, pack, kernels)
        self.lm_head_bias = _b(lm_head_bias)
        self.layout = self._layout()
        self._model_storage = {p.untyped_storage().data_ptr() for p in model.parameters() if p.numel()}
        dtype, device = self.embed.dtype, self.embed.device
        self.cos, self.sin = read.cos, read.sin
        self.columns = torch.arange(n_positions, device=device)
        self.kv_head_index = torch.arange(self.kv_heads, device=device)
        shape = (len(self.layers), max_rows, self.kv_heads, n_positions, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        # Per-layer views with one row per (KV row, head, position), for prefill and decode writes.
        self.keys_flat = [self.keys[i].view(-1, self.head_dim) for i in range(len(self.layers))]
        self.values_flat = [self.values[i].view(-1, self.head_dim) for i in range(len(self.layers))]
        # Per-step operations: the CPU kernels where they take this model, else torch (.step_ops).
        refusal = "no kernels" if kernels is None else kernels.refusal(device, dtype, self.group, self.head_dim)
        self._kernels = kernels if refusal is None else None
        # The attention and rope kernels, bound (and their contract checked) once for this cache.
        self._bound = None if self._kernels is None else \
            self._kernels.bind(self.keys, self.values, self.cos, self.sin, self.heads, self.alibi)
        self.ops = "cpu-kernels" if refusal is None else f"torch ({refusal})"
        # The decoder layers as one C call where every weight is in panels (.layer_stack); the
        # Python loop of step() otherwise. Both compute the same bits.
        why_not = layer_stack.refusal(self.layers, self._bound) if stack else "stack=False"
        self._stack = None if why_not is not None or kernels is None else layer_stack.LayerStack(
            kernels, self._bound, self.layers, self.recipe, self.eps, self.scale)
        self.stack = "one call" if self._stack is not None else f"python loop ({why_not})"
        self._built_stack = self._stack

    @classmethod
    def from_hf(
        cls, model: Any, max_rows: int, n_positions: int, prepack_weights: bool = True,
        kernels: CpuKernels | None = None, stack: bool = True,
    ) -> NativeDecoder:
        """Build from a loaded causal LM; ``ValueError`` with the reason when
        :func:`.architectures.native_support` refuses its config. ``stack=False`` keeps the Python
        layer loop where the layer stack could run (tests and benchmarks compare the two)."""
        reason = native_support(model.config)
        if reason is not None:
            raise ValueError(f"the native forward cannot run this model: {reason}")
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
        those, all the weight memory the backend holds. Packed weights, and every weight or bias
        copied (fused, transposed, reordered, widened) while its module was released; 0 where
        every weight is a view of the module's own (plain linears, unpacked)."""
        held = [w for layer in self.layers for w in (layer.qkv, layer.qkv_bias, layer.o, layer.o_bias,
                                                     layer.gate_up, layer.gate_up_bias, layer.down, layer.down_bias)]
        seen: set[int] = set()
        total = 0
        for w in [*held, self.lm_head, self.lm_head_bias]:
            if w is None:
                continue
            storage = _storage(w)
            if storage is None:
                total += w.nbytes
            elif storage not in self._model_storage and storage not in seen:
                seen.add(storage)
                total += w.untyped_storage().nbytes()
        return total

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
        x = F.embedding(tokens, self.embed)
        if self.position_table is not None:  # learned absolute positions, added as the model adds them
            x = x + F.embedding(pos + self.position_offset, self.position_table)
        if self.embed_norm is not None:  # BLOOM normalises the embedding before the first layer
            _, x = ops.add_norm(x, None, *self.embed_norm)
        delta: torch.Tensor | None = None
        if self._stack is not None and isinstance(ops, KernelOps):
            delta = self._stack.run(ops.step, x)  # the loop below, in one C call
        else:
            residual = self.recipe.residual
            for i, layer in enumerate(self.layers):
                x, h = ops.add_norm(x, delta, layer.attn_norm, layer.attn_norm_bias)
                attn = ops.attention(i, ops.rope_write(i, _linear(h, layer.qkv, layer.qkv_bias)))
                delta = _linear(attn, layer.o, layer.o_bias)
                if residual == "sequential":
                    x, h = ops.add_norm(x, delta, layer.mlp_norm, layer.mlp_norm_bias)
                elif residual == "parallel":  # the MLP reads the stream before this layer's attention
                    _, h = ops.add_norm(x, None, layer.mlp_norm, layer.mlp_norm_bias)
                mlp = _linear(ops.mlp_act(_linear(h, layer.gate_up, layer.gate_up_bias)), layer.down,
                              layer.down_bias)
                delta = mlp if residual == "sequential" else ops.add(delta, mlp)
        # Only the rows that produce a token reach the final norm and the LM head: the decode
        # rows and each prompt's last token (the norm is per row).
        if last is not None:
            keep = last if n == 0 else torch.cat([torch.arange(n, device=device), last])
            x, delta = x.index_select(0, keep), delta.index_select(0, keep)
        _, h = ops.add_norm(x, delta, self.final_norm, self.final_norm_bias)
        logits = _linear(h, self.lm_head, self.lm_head_bias).float()
        if last is None:
            return logits, None
        return (logits[:n] if n else None), logits[n:]

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy columns ``0..length-1`` of row ``src`` into row ``dst`` in every layer."""
        self.keys[:, dst, :, :length].copy_(self.keys[:, src, :, :length])
        self.values[:, dst, :, :length].copy_(self.values[:, src, :, :length])
