"""A step's decoder layers in one call into the CPU kernels (``layer_stack.c``): the native
forward's layer loop, compiled.

Why: the Python loop of :meth:`.decoder.NativeDecoder.step` makes nine kernel calls a layer
through ctypes, each paying Python's call, argument conversion and its wrapper's checks. At
a decode step's few rows that host work is a visible part of the step; here it is paid once
a step (docs/performance.md, "Compiled decode: the layer stack"). Prefill steps run the same
call: a step is one forward whatever it holds.

Where it runs: a model whose every decoder weight is in the panel layout (:mod:`.panel_linear`:
float32 on every CPU the kernels build on, bfloat16 on a CPU with AVX512-BF16) and whose
attention and rope run on the CPU kernels (:meth:`.cpu_kernels.CpuKernels.refusal`).
:func:`refusal` says why not elsewhere; there the Python loop runs, as before.

Invariant: the call computes what the Python loop computes, bit for bit. The same C functions
run in the same order on the same shapes with the same thread count; nothing is reordered
or fused (tests/backends/test_layer_stack.py compares both paths' logits and caches as
integers).

Contract: checked once at :class:`LayerStack`'s construction for the model (dtypes, sizes and
contiguity of every weight, bias and norm; the cache and the rotary tables were checked when
:meth:`.cpu_kernels.CpuKernels.bind` bound them), and per call for the step's activations; the
step's positions and rows are checked as for the other kernels
(:meth:`.cpu_kernels.ModelKernels.step`, and in C before anything is written). The pointers it
records stay valid: it holds those tensors (the bound kernels hold the cache and tables), and the
native forward never replaces them. ``eps`` and ``scale`` are copied at construction: the native
forward never changes its own after.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Sequence

import torch

from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels, KernelContractError, ModelKernels, StepKernels
from djl_python.backends.pytorch.native.cpu_kernels import check_code
from djl_python.backends.pytorch.native.panel_linear import PanelWeight

if TYPE_CHECKING:
    from djl_python.backends.pytorch.native.architectures import Recipe
    from djl_python.backends.pytorch.native.decoder import _Layer

_P = ctypes.c_void_p


class _StackLayer(ctypes.Structure):
    """``StackLayer`` of layer_stack.c, field for field."""

    _fields_ = [(name, _P) for name in ("attn_norm", "attn_norm_bias", "qkv", "qkv_bias", "o", "o_bias",
                                        "mlp_norm", "mlp_norm_bias", "gate_up", "gate_up_bias", "down",
                                        "down_bias", "keys", "values")]


class _StackModel(ctypes.Structure):
    """``StackModel`` of layer_stack.c, field for field."""

    _fields_ = [*((name, ctypes.c_int64) for name in ("layers", "hidden", "heads", "kv", "d", "inter", "P",
                                                      "rows_total", "norm", "activation", "residual")),
                ("eps", ctypes.c_float), ("scale", ctypes.c_float), ("cos_t", _P), ("sin_t", _P), ("slopes", _P),
                ("layer", ctypes.POINTER(_StackLayer))]


class _StackBuffers(ctypes.Structure):
    """``StackBuffers`` of layer_stack.c, field for field."""

    _fields_ = [(name, _P) for name in ("x", "delta", "h", "qkv", "q", "attn", "gate_up", "act", "mlp_out")]


# StackModel's codes for a recipe (layer_stack.c): norm, activation (activate()'s kinds), residual.
_NORMS = {"rms": 0, "layer": 1}
_ACTIVATIONS = {"silu": 0, "gelu_tanh": 1, "gelu_erf": 2, "relu": 3}
_RESIDUALS = {"sequential": 0, "parallel": 1, "shared_norm": 2}


def refusal(layers: Sequence[_Layer], bound: ModelKernels | None) -> str | None:
    """``None`` when :class:`LayerStack` can run these layers on ``bound``'s cache, else why not."""
    if bound is None:
        return "the attention and rope run on torch ops"
    if not layers:
        return "no decoder layers"
    weights = [w for layer in layers for w in (layer.qkv, layer.o, layer.gate_up, layer.down)]
    if not all(isinstance(w, PanelWeight) for w in weights):
        return "not every decoder weight is in the panel layout"
    return None


class LayerStack:
    """The decoder layers of one native forward as one C call. Build it when :func:`refusal`
    returns ``None``; :meth:`run` then replaces the Python layer loop."""

    def __init__(self, kernels: CpuKernels, bound: ModelKernels, layers: Sequence[_Layer], recipe: Recipe,
                 eps: float, scale: float) -> None:
        reason = refusal(layers, bound)
        if reason is not None:
            raise KernelContractError(f"layer_stack: {reason}")
        dtype, d, heads, kv = bound.dtype, bound.head_dim, bound.heads, bound.kv
        self._function = kernels.layer_stack_function(dtype)  # refuses a dtype without a matmul here
        panel = kernels.gemm_panel[dtype]
        if len(layers) != bound.layers:
            raise KernelContractError(f"layer_stack: {len(layers)} layers over a cache of {bound.layers}")
        first = layers[0]
        self.hidden = first.qkv.in_features
        self.inter = first.down.in_features
        self.gated = recipe.gated
        self.parallel = recipe.residual != "sequential"
        self.widths = {"qkv": (heads + 2 * kv) * d, "q": heads * d,
                       "gate_up": 2 * self.inter if self.gated else self.inter}
        held: list[torch.Tensor] = []
        records = (_StackLayer * len(layers))()
        for i, layer in enumerate(layers):
            shapes = {"qkv": (self.widths["qkv"], self.hidden), "o": (self.hidden, self.widths["q"]),
                      "gate_up": (self.widths["gate_up"], self.hidden), "down": (self.hidden, self.inter)}
            fields: dict[str, int | None] = {}
            for name, (out_features, in_features) in shapes.items():
                weight: PanelWeight = getattr(layer, name)
                if weight.dtype != dtype or (weight.out_features, weight.in_features) != (out_features, in_features):
                    raise KernelContractError(f"layer_stack: layer {i} {name} is {weight.dtype} "
                                              f"{(weight.out_features, weight.in_features)}, expected {dtype} "
                                              f"{(out_features, in_features)}")
                padded = -(-out_features // panel) * panel  # the last panel's zero columns
                fields[name] = _pointer(weight.panels, held, f"layer {i} {name}", dtype, padded * in_features)
                bias = getattr(layer, f"{name}_bias")
                fields[f"{name}_bias"] = None if bias is None else _pointer(bias, held, f"layer {i} {name}_bias",
                                                                           dtype, out_features)
            for name in ("attn_norm", "attn_norm_bias", "mlp_norm", "mlp_norm_bias"):
                t = getattr(layer, name)
                if t is None and name == "attn_norm":
                    raise KernelContractError(f"layer_stack: layer {i} has no attn_norm")
                if t is None and name == "mlp_norm" and recipe.residual != "shared_norm":
                    raise KernelContractError(f"layer_stack: layer {i} has no mlp_norm, its residual is "
                                              f"{recipe.residual}")
                if t is not None and name.endswith("_bias") and recipe.norm != "layer":
                    raise KernelContractError(f"layer_stack: layer {i} has {name} with an RMS norm")
                fields[name] = None if t is None else _pointer(t, held, f"layer {i} {name}", dtype, self.hidden)
            keys, values = bound.cache_pointers(i)
            records[i] = _StackLayer(**fields, keys=keys, values=values)
        cos, sin = bound.table_pointers()
        self._model = _StackModel(
            layers=len(layers), hidden=self.hidden, heads=heads, kv=kv, d=d, inter=self.inter, P=bound.positions,
            rows_total=bound.rows_total, norm=_NORMS[recipe.norm], activation=_ACTIVATIONS[recipe.kernel_activation],
            residual=_RESIDUALS[recipe.residual], eps=eps, scale=scale, cos_t=cos, sin_t=sin, slopes=bound.slopes,
            layer=records)
        self._records, self._held, self._bound = records, held, bound  # held: the pointers stay valid
        self.dtype = dtype

    def run(self, step: StepKernels, x: torch.Tensor) -> torch.Tensor:
        """Every decoder layer on ``x [n, hidden]`` (the step's embeddings, updated in place into
        the residual stream before the last layer's down projection) at ``step``'s positions and
        rows; returns that down projection ``[n, hidden]`` (the caller adds it in the final norm)."""
        if step.m is not self._bound:
            raise KernelContractError("layer_stack: the step is bound to another model's cache")
        n = step.n
        if x.dtype != self.dtype or x.shape != (n, self.hidden) or not x.is_contiguous() or not x.is_cpu:
            raise KernelContractError(f"layer_stack: x must be a contiguous CPU [{n}, {self.hidden}] of {self.dtype}, "
                                      f"got {x.dtype} {tuple(x.shape)}")
        if not n:  # no token: every layer leaves nothing to add, as the loop's calls do
            return torch.empty_like(x)
        delta, h = torch.empty_like(x), torch.empty_like(x)
        qkv = x.new_empty((n, self.widths["qkv"]))
        q, attn = x.new_empty((n, self.widths["q"])), x.new_empty((n, self.widths["q"]))
        gate_up = x.new_empty((n, self.widths["gate_up"]))
        act = x.new_empty((n, self.inter)) if self.gated else None
        mlp_out = torch.empty_like(x) if self.parallel else None
        buffers = _StackBuffers(*(None if t is None else t.data_ptr()
                                  for t in (x, delta, h, qkv, q, attn, gate_up, act, mlp_out)))
        code = self._function(ctypes.addressof(self._model), ctypes.addressof(buffers), step.positions.data_ptr(),
                              step.rows.data_ptr(), step.lengths.data_ptr(), n, torch.get_num_threads())
        check_code("layer_stack", code, f"a position outside 0..{self._bound.positions - 1} or a row outside "
                                        f"0..{self._bound.rows_total - 1}")
        return delta


def _pointer(t: torch.Tensor, held: list[torch.Tensor], name: str, dtype: torch.dtype, numel: int) -> int:
    """``t``'s address, once it is checked to be a contiguous CPU tensor of ``dtype`` with ``numel``
    elements; ``t`` joins ``held`` so the address stays valid."""
    if t.dtype != dtype or not t.is_contiguous() or not t.is_cpu or t.numel() != numel:
        raise KernelContractError(f"layer_stack: {name} must be a contiguous CPU tensor of {dtype} with {numel} "
                                  f"elements, got {t.dtype} {tuple(t.shape)}")
    held.append(t)
    return t.data_ptr()
