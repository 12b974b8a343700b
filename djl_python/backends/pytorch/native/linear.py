"""Linear layers for the native forwards: which matmul kernel runs a weight, and its layout.

Five kernels, picked per weight once at load and per call by the number of rows:

* **Panel matmul** (CPU, where the CPU kernels built: fp32 on every such CPU, bf16 with
  AVX512-BF16): the weight is packed once into :mod:`.panel_linear`'s column panels and every
  call runs ``gemm.c`` on it. It reads the weights at memory speed at a decode step's few rows,
  where oneDNN does not, and keeps pace with oneDNN at a prefill's hundreds
  (docs/performance.md, "The panel matmul"); a row's output does not depend on the other rows
  of its call.
* **oneDNN, prepacked** (CPU, elsewhere when this CPU's oneDNN build takes the dtype: fp32 on any
  x86-64; bf16 only where the CPU has bf16 arithmetic, AVX512-BF16 or AMX-BF16: oneDNN also
  takes bf16 on other AVX-512 CPUs, but emulates it there, slower than the widened fp32 GEMM at
  a decode batch and in prefill, though faster at one row, where the weights' bytes bound the
  step; docs/performance.md, "the Intel Xeon run"). The weight is reordered once
  into oneDNN's blocked layout (:func:`prepack`) and every call runs
  ``torch.ops.mkldnn._linear_pointwise`` on it. This is the layout vLLM's CPU build runs
  its dense layers on (``vllm/model_executor/layers/utils.py``,
  ``dispatch_cpu_unquantized_gemm``: ``create_onednn_mm`` on the weight, the plain weight
  removed). It is faster than the best unpacked kernel at every row count tried
  (docs/performance.md, "Kernel choices in the native linear layers"), and one packing
  serves every row count.
* **oneDNN, widened** (CPU, bf16 or fp16 where oneDNN does not take them, or bf16 without bf16
  arithmetic; fp32 where oneDNN does: AVX2 CPUs, AVX-512 CPUs before Cooper Lake and Zen 4). The half weight is widened to fp32 and packed; a call widens the
  activations, runs the fp32 GEMM and rounds the output to the model dtype once. That is
  the arithmetic of a half-precision GEMM with fp32 accumulation (both factors are exact in
  fp32), at fp32 GEMM speed instead of the several times slower emulated half GEMM, for twice the
  half weights' memory (the memory plan counts it); biases are held in fp32 too.
  Activations, norms and the KV cache stay in the model dtype.
* **weight-first** (CPU, unpacked, a decode step's few rows): ``weight @ x.T``. For a few
  rows against a transposed weight, MKL's sgemm ran well below the weight's memory speed
  (docs/performance.md, same section).
* ``F.linear`` otherwise (CUDA; a prefill's hundreds of rows on an unpacked weight).

Every kernel computes each output element as the same dot product; they may sum it in
another order, which moves fp32 logits by ~1e-4 at most (relative ~1e-6), not tokens on the
models the tests run (greedy equivalence with ``generate()`` is tested on all of them).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from djl_python.backends.pytorch.native import panel_linear
from djl_python.backends.model_defaults import cpu_bf16_flags
from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels
from djl_python.backends.pytorch.native.panel_linear import PanelWeight

# Up to this many rows (a decode step) an unpacked weight takes the weight-first product; a
# prefill's hundreds of rows are a plain GEMM that ``F.linear`` runs at full speed.
FEW_ROWS = 64
# The row count oneDNN is told to expect when packing: a mid-sized decode batch. The packed
# layout does not depend on it for these shapes (docs/performance.md, kernel choices).
_PACK_ROWS_HINT = 16
# Half dtypes packed widened to fp32 where oneDNN does not take them (module docstring).
WIDENED = (torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=None)
def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether this process's oneDNN can prepack and run ``dtype`` weights on this CPU.

    Asked of oneDNN itself (a tiny reorder), not inferred from CPU flags: the bf16 path needs
    instructions that torch checks at call time and refuses with a ``RuntimeError``.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=dtype), _PACK_ROWS_HINT)
        torch.ops.mkldnn._linear_pointwise(torch.zeros(2, 8, dtype=dtype), probe, None, "none", [], "")
    except (RuntimeError, AttributeError):
        return False
    return True


def packed_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype weights of ``dtype`` on a ``device_type`` device are packed in (:func:`prepack`),
    ``None`` when they are not packed: the one rule the native forward and the memory plan
    share. ``dtype`` itself where oneDNN takes it (bf16: and this CPU has bf16 arithmetic);
    float32 for a half dtype it does not take (widened, module docstring); else ``None``."""
    if device_type != "cpu":
        return None
    if onednn_packs(dtype) and (dtype != torch.bfloat16 or bf16_arithmetic()):
        return dtype
    if dtype in WIDENED and onednn_packs(torch.float32):
        return torch.float32
    return None


def bf16_arithmetic() -> bool:
    """Whether this CPU multiplies bf16 in hardware (:data:`..model_defaults.BF16_CPU_FLAGS`), so
    that oneDNN's bf16 matmul runs natively rather than emulated."""
    return bool(cpu_bf16_flags())


def packs_on(device_type: str, dtype: torch.dtype) -> bool:
    """Whether weights of ``dtype`` on a ``device_type`` device are packed (:func:`packed_dtype`)."""
    return packed_dtype(device_type, dtype) is not None


def prepack(weight: torch.Tensor, kernels: CpuKernels | None = None) -> torch.Tensor | PanelWeight:
    """``weight`` packed for the fastest kernel this host has (module docstring): the panel
    layout where ``kernels`` has a matmul for its dtype and oneDNN takes that dtype unwidened
    (so the memory plan's :func:`packed_dtype` holds either way), else oneDNN's layout
    (widened to float32 where :func:`packed_dtype` says so), else ``weight`` itself where it is
    not packed. A packed weight is a new allocation."""
    dtype = packed_dtype(weight.device.type, weight.dtype)
    if dtype is None:
        return weight
    if kernels is not None and dtype == weight.dtype and panel_linear.refusal(kernels, weight) is None:
        return panel_linear.pack(weight, kernels)
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype).contiguous(), _PACK_ROWS_HINT)


def linear(x: torch.Tensor, weight: torch.Tensor | PanelWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` on the kernel ``weight``'s layout calls for (module docstring)."""
    if isinstance(weight, PanelWeight):
        if x.dim() in (0, 2):
            return weight(x, bias)  # a 0-d x is refused there, with the contract's message
        return weight(x.reshape(-1, x.shape[-1]), bias).view(*x.shape[:-1], weight.out_features)
    if weight.is_mkldnn:
        if weight.dtype != x.dtype:  # widened: fp32 GEMM on the half inputs, one rounding of the output
            bias = bias if bias is None or bias.dtype == weight.dtype else bias.float()
            return torch.ops.mkldnn._linear_pointwise(x.float(), weight, bias, "none", [], "").to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if x.dim() != 2 or x.device.type != "cpu" or x.shape[0] > FEW_ROWS:
        return F.linear(x, weight, bias)
    y = torch.mm(weight, x.t()).t().contiguous()
    return y if bias is None else y + bias


def release(module: torch.nn.Linear) -> None:
    """Free a Hugging Face linear's weight and bias once the native forward holds its own
    (packed or fused) copy: one copy of the weights in memory, as before packing. The
    module is left unusable (empty weight), which the backend states in its info."""
    empty = torch.nn.Parameter(module.weight.new_empty(0), requires_grad=False)
    module.weight = empty
    if module.bias is not None:
        module.bias = torch.nn.Parameter(module.bias.new_empty(0), requires_grad=False)
