"""Weights packed for the CPU kernels' matmul (``gemm.c``): the layout, the packing, the calls.

Why: at a decode step's few rows, oneDNN's GEMM on its prepacked layout reads the weights
well below this machine's memory speed and does not overlap the reads with its arithmetic;
``gemm.c`` streams each panel of the weight front to back with prefetch, and at a prefill's
hundreds of rows it keeps pace with oneDNN (docs/performance.md, "The panel matmul").

Layout: ``W [n, k]`` in panels of ``width`` (32) output columns, the last padded with zero
columns: float32 ``[panels, k, width]``, bfloat16 ``[panels, k / 2, width, 2]`` (pairs along
``k``, as ``vdpbf16ps`` multiplies them). One copy: :func:`pack` makes it, and the caller
releases the original (:func:`.linear.release`).

Invariant: a row's output does not depend on the other rows of its call. Each output element
is one fp32 sum over ``k`` in one fixed order from its bias, whatever the row count, tile or
thread count (``gemm.c`` states the order and the bf16 instructions' handling of subnormals and
NaN), so a sequence decodes to the same bits alone or in any batch, and a prompt prefilled
whole or in chunks gives the same linear outputs.

Contract of :meth:`PanelWeight.__call__`: ``x`` a 2-dimensional CPU tensor of the weight's
dtype, ``k`` wide (rows that are not each one contiguous run are copied first); ``bias`` ``None`` or ``[n]`` of the same dtype,
contiguous. Anything else raises :class:`.cpu_kernels.KernelContractError` before the kernel
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels, KernelContractError


class GemmFunction(Protocol):
    """``gemm_f32`` / ``gemm_bf16`` of ``gemm.c`` through ctypes: addresses, strides and sizes."""

    def __call__(self, x: int, lda: int, panels: int, bias: int | None, y: int, ldy: int, m: int, n: int, k: int,
                 threads: int) -> None: ...


def refusal(kernels: CpuKernels | None, weight: torch.Tensor) -> str | None:
    """``None`` when :func:`pack` can pack ``weight`` for ``kernels``, else why not."""
    if kernels is None:
        return "no CPU kernels"
    if weight.device.type != "cpu" or weight.dim() != 2:
        return "not a 2-dimensional CPU weight"
    if weight.dtype not in kernels.gemm_panel:
        return f"no matmul compiled for {weight.dtype} on this CPU (bfloat16 needs AVX512-BF16)"
    if weight.dtype == torch.bfloat16 and weight.shape[1] % 2:
        return f"an odd input width {weight.shape[1]} (bfloat16 pairs)"
    return None


@dataclass(frozen=True, eq=False)
class PanelWeight:
    """A linear's weight in ``gemm.c``'s panel layout (module docstring); call it on activations."""

    panels: torch.Tensor
    out_features: int
    in_features: int
    function: GemmFunction  # CpuKernels.gemm_function(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.panels.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held (the panels, padding included), as ``Tensor.nbytes`` for the memory count."""
        return self.panels.nbytes

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ W.T + bias``, ``[rows, out_features]`` in the weight's dtype (contract above)."""
        if x.dtype != self.panels.dtype or x.dim() != 2 or not x.is_cpu:
            raise KernelContractError(f"gemm: x must be a 2-dimensional CPU tensor of {self.panels.dtype}, got "
                                      f"{x.dtype} {tuple(x.shape)} on {x.device}")
        rows, width = x.shape
        if width != self.in_features:
            raise KernelContractError(f"gemm: x is {width} wide, the weight takes {self.in_features}")
        if bias is not None and (bias.dtype != x.dtype or bias.shape != (self.out_features,)
                                 or not bias.is_contiguous() or not bias.is_cpu):
            raise KernelContractError(f"gemm: bias must be a contiguous CPU [{self.out_features}] of {x.dtype}, got "
                                      f"{bias.dtype} {tuple(bias.shape)}")
        if x.stride(1) != 1 or (rows > 1 and x.stride(0) < width):
            x = x.contiguous()  # the kernel reads each row as one run, rows x.stride(0) apart
        out = x.new_empty((rows, self.out_features))
        if rows:
            self.function(x.data_ptr(), x.stride(0), self.panels.data_ptr(),
                          None if bias is None else bias.data_ptr(), out.data_ptr(), self.out_features, rows,
                          self.out_features, width, torch.get_num_threads())
        return out


def pack(weight: torch.Tensor, kernels: CpuKernels) -> PanelWeight:
    """``weight [n, k]`` in the panel layout, a new allocation; :func:`refusal` must have
    returned ``None`` for it (else :class:`KernelContractError`)."""
    reason = refusal(kernels, weight)
    if reason is not None:
        raise KernelContractError(f"gemm: cannot pack this weight: {reason}")
    n, k = weight.shape
    width = kernels.gemm_panel[weight.dtype]
    count, full = -(-n // width), n // width
    pair = 2 if weight.dtype == torch.bfloat16 else 1  # bf16: pairs along k, [count, k / 2, width, 2]
    panels = weight.new_empty((count, k // pair, width, pair))
    source = weight.detach()

    def columns_first(rows: torch.Tensor) -> torch.Tensor:
        # [p, c, k] rows of W as [p, k / pair, c, pair]: panel p's column c, input j at (j // pair, c, j % pair)
        return rows.view(rows.shape[0], rows.shape[1], k // pair, pair).transpose(1, 2)

    if full:
        panels[:full] = columns_first(source[: full * width].view(full, width, k))
    if count > full:  # the last panel: its columns, then zero columns (one small padded copy)
        tail = source.new_zeros((1, width, k))
        tail[0, : n - full * width] = source[full * width :]
        panels[full:] = columns_first(tail)
    return PanelWeight(panels if pair == 2 else panels.view(count, k, width), n, k,
                       kernels.gemm_function(weight.dtype))
