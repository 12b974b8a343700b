"""The native forward's CPU kernels (``cpu_kernels.c``): built once per machine, called with ctypes.

Four kinds, one library:

* **Decode attention.** Why: torch's CPU ``scaled_dot_product_attention`` reads every row up
  to the step's widest column (the rest masked) and runs well below memory speed at one
  query per row. The kernel reads each row only up to its own length, loads each key and
  value once for all the query heads that share it, and keeps the weighted sum in
  registers. A prompt token is the same kind of query (its row, up to its position), so the
  native forward runs a whole step's attention, decode rows and prompts, as one call a layer.
* **Elementwise** (residual add + RMS norm, rotary embedding + K/V write, SiLU-gated
  product). Why: at a decode step's sizes each torch op costs its dispatch, not its
  arithmetic; each kernel is one call doing the same operations with the same roundings
  (the C file says how). docs/performance.md has the measurements behind both.
* **Matmul** (``gemm.c``; float32 on every CPU the kernels build on, bfloat16 with AVX512-BF16):
  ``x @ W.T + bias`` on weights packed in column panels (:mod:`.panel_linear` packs them and
  checks each call). Why: at a decode step's few rows oneDNN's GEMM reads its packed weights
  well below memory speed; this one streams them.
* **The layer stack** (``layer_stack.c``): a step's decoder layers, the calls above in the
  native forward's order, as one call (:mod:`.layer_stack`). Why: the host work of nine
  ctypes calls a layer.

Contract: every :class:`CpuKernels` method checks, once per call, the dtypes, contiguity,
index dtypes and shapes its C function relies on and raises :class:`KernelContractError`
before any memory is touched; :class:`ModelKernels`, the attention and rope kernels bound to
one model's cache (the native forward's hot path), checks the same things once at bind, once
per step and per call only for what changes. The C functions check each index they address
memory by (rows, lengths, positions) and return an error code instead of reading out of
bounds. NaN and Inf propagate as in torch's ops.

Build: ``cc -O3 -march=native -ffp-contract=off -fopenmp -shared -fPIC`` of the three C files into
``$DJL_CACHE_DIR/kernels/cpu_kernels-<key>.so`` (default ``~/.cache/djl_python``), the
key hashing the sources, the compiler's version, the flags and this CPU's model and flags:
``-march=native`` code runs only on CPUs like the one that built it, so an image moved to
another CPU kind builds its own. The build writes a temporary file and renames it, so
workers starting together never load a half-written library. The tests also build it with
AddressSanitizer and UBSan (``load(sanitize=True)``) and run the kernel tests on that build.

Threads: the library links ``libgomp.so.1``, the soname of the OpenMP runtime torch has
already loaded, so the dynamic loader hands it torch's runtime and the kernels run on as
many threads as ``torch.get_num_threads()`` (passed on every call; the elementwise kernels
use them only on a prefill's sizes).

Fallback: where this host cannot build the library (:func:`host_refusal`: not x86-64 Linux,
no AVX2/FMA, no C compiler), :func:`load` returns ``None`` with the reason and the native
forward keeps torch's SDPA and ops. A host that should build it and fails (a broken
compiler, an unwritable cache) falls back the same way but logs a warning;
:meth:`CpuKernels.refusal` names what a model needs that the kernels lack (dtype, head size,
group size, device).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from djl_python.artifacts.sources import default_cache_dir

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
# The matmul, compiled into the same library (its functions: _GEMM_SIGNATURE).
GEMM_SOURCE = Path(__file__).with_name("gemm.c")
# A step's decoder layers in one call (.layer_stack), compiled into the same library too.
STACK_SOURCE = Path(__file__).with_name("layer_stack.c")
# Their entry points, declared once (each C file includes it).
HEADER = Path(__file__).with_name("cpu_kernels.h")
# Every file a build reads (the package must ship each: pyproject.toml's package data).
BUILD_INPUTS = (SOURCE, GEMM_SOURCE, STACK_SOURCE, HEADER)
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")
# The test build: every out-of-bounds access and undefined behaviour aborts the process.
SANITIZE_FLAGS = ("-O1", "-g", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC",
                  "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_P, _I, _F, _T = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
# name: (restype, argtypes), as declared in cpu_kernels.c; each exists as name_f32 and name_bf16.
_SIGNATURES = {
    "decode_attention": (ctypes.c_int, [_P, _I, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _F, _P, _T]),
    "add_rms_norm": (None, [_P, _P, _P, _P, _I, _I, _F, _T]),
    "rope_write": (ctypes.c_int, [_P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _T]),
    "silu_mul": (None, [_P, _P, _I, _I, _T]),
    "add_layer_norm": (None, [_P, _P, _P, _P, _P, _I, _I, _F, _T]),
    "activate": (ctypes.c_int, [_P, _I, _I, _T, _T]),
    "add_into": (None, [_P, _P, _I, _T]),
}
# activate's kinds (cpu_kernels.c, ACTIVATION_*), by the names of .architectures.ACTIVATIONS.
_ACTIVATION_KINDS = {"gelu_tanh": 1, "gelu_erf": 2, "relu": 3}
# gemm_f32 / gemm_bf16 (gemm.c): x, lda, panels, bias, y, ldy, m, n, k, threads.
_GEMM_SIGNATURE = (None, [_P, _I, _P, _P, _P, _I, _I, _I, _I, _T])
# layer_stack_f32 / _bf16 (layer_stack.c): model, buffers, positions, rows, lengths, n, threads.
_STACK_SIGNATURE = (ctypes.c_int, [_P, _P, _P, _P, _P, _I, _T])
# Return codes of the kernels that return one (cpu_kernels.c).
_NO_MEMORY, _BAD_INDEX = 1, 2


class KernelContractError(ValueError):
    """A kernel was called with tensors outside its contract (dtype, layout, shape or an index
    out of range). Raised before the kernel reads or writes anything."""


def _refuse(kernel: str, what: str) -> KernelContractError:
    return KernelContractError(f"{kernel}: {what}")


def _check_dense(kernel: str, name: str, t: torch.Tensor, dtype: torch.dtype, dims: int) -> None:
    """``t`` is a CPU tensor of ``dtype`` with ``dims`` dimensions, contiguous. (The checks run on
    every call of a decode step: each message is formatted only when it is raised.)"""
    if t.dtype != dtype:
        raise _refuse(kernel, f"{name} is {t.dtype}, expected {dtype}")
    if t.dim() != dims:
        raise _refuse(kernel, f"{name} has {t.dim()} dimensions, expected {dims}")
    if not t.is_contiguous():
        raise _refuse(kernel, f"{name} is not contiguous")
    if not t.is_cpu:
        raise _refuse(kernel, f"{name} is on {t.device}, not the CPU")


def _check_index(kernel: str, name: str, t: torch.Tensor, n: int) -> None:
    """``t`` is a contiguous int64 CPU vector of ``n`` elements (its values: checked in C)."""
    _check_dense(kernel, name, t, torch.int64, 1)
    if t.shape[0] != n:
        raise _refuse(kernel, f"{name} has {t.shape[0]} elements, expected {n}")


def _check_same_shape(kernel: str, a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise _refuse(kernel, f"{names}: {tuple(a.shape)} != {tuple(b.shape)}")


def _check_tables(kernel: str, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype, positions: int,
                  head_dim: int) -> None:
    """The rotary tables are ``[P, head_dim]``: as many rows as the cache has positions, a
    whole head wide (``rope_write`` reads them with the head's stride)."""
    for label, t in (("cos", cos), ("sin", sin)):
        _check_dense(kernel, label, t, dtype, 2)
        if t.shape[0] != positions or t.shape[1] != head_dim:
            raise _refuse(kernel, f"{label} is {tuple(t.shape)}, expected (P, head_dim) = {(positions, head_dim)}")


def check_code(kernel: str, code: int, bad_index: str) -> None:
    """Raise for a kernel's return code (``cpu_kernels.c``): :class:`KernelContractError` saying
    ``bad_index`` for BAD_INDEX (nothing was written), ``MemoryError`` for NO_MEMORY."""
    if code == _BAD_INDEX:
        raise _refuse(kernel, bad_index)
    if code == _NO_MEMORY:
        raise MemoryError(f"{kernel}: a thread could not allocate its scratch buffer")


def _attend(function: Any, q: torch.Tensor, keys: int, values: int, rows: torch.Tensor, lengths: torch.Tensor,
            kv: int, group: int, head_dim: int, positions: int, rows_total: int, scale: float,
            slopes: int | None = None) -> torch.Tensor:
    """Call a checked ``decode_attention_*`` (cache pointers ``keys``/``values``, ALiBi ``slopes``
    or ``None``); map its code."""
    n, width = q.shape
    out = q.new_empty((n, width))
    if not n:
        return out
    code = function(q.data_ptr(), q.stride(0), keys, values, rows.data_ptr(), lengths.data_ptr(), out.data_ptr(), n,
                    kv, group, head_dim, positions, rows_total, scale, slopes, torch.get_num_threads())
    check_code("decode_attention", code, f"a row outside 0..{rows_total - 1} or a length outside 1..{positions}")
    return out


def _rope(function: Any, qkv: torch.Tensor, cos: int, sin: int, positions: torch.Tensor, rows: torch.Tensor,
          keys: int, values: int, heads: int, kv: int, head_dim: int, max_positions: int,
          rows_total: int) -> torch.Tensor:
    """Call a checked ``rope_write_*`` (table and cache pointers); map its code; the rotated q."""
    n = qkv.shape[0]
    q = qkv.new_empty((n, heads * head_dim))
    code = function(qkv.data_ptr(), cos, sin, positions.data_ptr(), rows.data_ptr(), q.data_ptr(), keys, values, n,
                    heads, kv, head_dim, max_positions, rows_total, torch.get_num_threads())
    check_code("rope_write", code, f"a position outside 0..{max_positions - 1} or a row outside 0..{rows_total - 1}")
    return q


class CpuKernels:
    """The loaded library. Each method states the contract of its C function and checks it once
    per call (dtypes, contiguity, index dtypes, shapes; the C code checks index values), raising
    :class:`KernelContractError` before the kernel touches memory. :meth:`refusal` says which
    models the kernels take at all."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.max_group = int(library.decode_attention_max_group())
        self._functions: dict[tuple[str, torch.dtype], Any] = {}
        for name, (restype, argtypes) in {**_SIGNATURES, "gemm": _GEMM_SIGNATURE,
                                          "layer_stack": _STACK_SIGNATURE}.items():
            for dtype, suffix in _SUFFIX.items():
                function = getattr(library, f"{name}_{suffix}")
                function.restype = restype
                function.argtypes = argtypes
                self._functions[name, dtype] = function
        # The dtypes whose matmul this CPU compiled (float32: AVX-512F, or AVX2 and FMA, which
        # every build has; bfloat16: AVX512-BF16), with their panel width; the others keep oneDNN.
        self.gemm_panel: dict[torch.dtype, int] = {}
        for dtype, suffix in _SUFFIX.items():
            width = int(getattr(library, f"gemm_panel_width_{suffix}")())
            if width:
                self.gemm_panel[dtype] = width
        # The vector width the float32 matmul was compiled for (512: AVX-512F, 256: AVX2), which
        # the load log line reports: the same bits either way, not the same speed.
        self.vector_bits = int(library.gemm_vector_bits())

    def gemm_function(self, dtype: torch.dtype) -> Any:
        """The C matmul for ``dtype`` (``gemm.c``); only for a dtype in :attr:`gemm_panel`, and
        called only through :class:`.panel_linear.PanelWeight`, which checks its contract."""
        if dtype not in self.gemm_panel:
            raise _refuse("gemm", f"not compiled for {dtype} on this CPU")
        return self._functions["gemm", dtype]

    def layer_stack_function(self, dtype: torch.dtype) -> Any:
        """The C layer loop for ``dtype`` (``layer_stack.c``); called only through
        :class:`.layer_stack.LayerStack`, which checks its contract."""
        if dtype not in self.gemm_panel:
            raise _refuse("layer_stack", f"no matmul compiled for {dtype} on this CPU")
        return self._functions["layer_stack", dtype]

    def refusal(self, device: torch.device, dtype: torch.dtype, group: int, head_dim: int) -> str | None:
        """``None`` when the kernels can run a model of this shape, else why not."""
        if device.type != "cpu":
            return f"device {device.type} (the kernels are for CPUs)"
        if dtype not in _SUFFIX:
            return f"dtype {dtype} (float32 and bfloat16 only)"
        if head_dim % 8:
            return f"head_dim {head_dim} is not a multiple of 8"
        if not 1 <= group <= self.max_group:
            return f"{group} query heads per KV head (at most {self.max_group})"
        return None

    def bind(self, keys: torch.Tensor, values: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
             heads: int, slopes: torch.Tensor | None = None) -> ModelKernels:
        """The attention and rope kernels bound to a model's cache, tables and ALiBi slopes
        (:class:`ModelKernels`)."""
        return ModelKernels(self, keys, values, cos, sin, heads, slopes)

    @staticmethod
    def _check_model_dtype(kernel: str, dtype: torch.dtype) -> None:
        if dtype not in _SUFFIX:
            raise _refuse(kernel, f"dtype {dtype} (float32 and bfloat16 only)")

    def decode_attention(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
        scale: float, slopes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of ``q [n, kv * group * head_dim]`` (rows may be strided, each row contiguous)
        over ``keys``/``values [rows_total, kv, P, head_dim]`` (one layer, contiguous), query
        ``b`` reading row ``rows[b]`` columns ``0..lengths[b]-1``; returns ``[n, kv * group *
        head_dim]`` in ``q``'s dtype. ``rows`` within ``keys``, ``1 <= lengths <= P``, both
        int64 and contiguous; ``head_dim % 8 == 0``, ``1 <= group <= max_group``. ``slopes``:
        ALiBi, one float32 per query head, ``slopes[h] * j`` added to head ``h``'s score at column
        ``j`` after the scale."""
        name = "decode_attention"
        self._check_model_dtype(name, q.dtype)
        _check_dense(name, "keys", keys, q.dtype, 4)
        _check_dense(name, "values", values, q.dtype, 4)
        _check_same_shape(name, values, keys, "values and keys")
        rows_total, kv, positions, head_dim = keys.shape
        if q.dim() != 2 or not q.is_cpu:
            raise _refuse(name, "q must be a 2-dimensional CPU tensor")
        n, width = q.shape
        if n and (q.stride(1) != 1 or q.stride(0) < width):
            raise _refuse(name, f"q rows must be contiguous and not overlap (strides {q.stride()})")
        if head_dim % 8:
            raise _refuse(name, f"head_dim {head_dim} is not a multiple of 8")
        if not kv or width % (kv * head_dim):
            raise _refuse(name, f"q width {width} is not a multiple of kv * head_dim = {kv * head_dim}")
        group = width // (kv * head_dim)
        if not 1 <= group <= self.max_group:
            raise _refuse(name, f"{group} query heads per KV head (1 to {self.max_group})")
        _check_index(name, "rows", rows, n)
        _check_index(name, "lengths", lengths, n)
        if slopes is not None:
            _check_dense(name, "slopes", slopes, torch.float32, 1)
            if slopes.shape[0] != kv * group:
                raise _refuse(name, f"slopes has {slopes.shape[0]} elements, q {kv * group} heads")
        return _attend(self._functions[name, q.dtype], q, keys.data_ptr(), values.data_ptr(), rows, lengths, kv,
                       group, head_dim, positions, rows_total, scale, None if slopes is None else slopes.data_ptr())

    def add_rms_norm(
        self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """``x += delta`` in place (when given), then LlamaRMSNorm of ``x`` with ``weight``;
        returns the normed ``[n, hidden]``. ``x``, ``delta`` ``[n, hidden]``, ``weight [hidden]``,
        one dtype, contiguous."""
        name = "add_rms_norm"
        self._check_model_dtype(name, x.dtype)
        _check_dense(name, "x", x, x.dtype, 2)
        n, hidden = x.shape
        if delta is not None:
            _check_dense(name, "delta", delta, x.dtype, 2)
            _check_same_shape(name, delta, x, "delta and x")
        _check_dense(name, "weight", weight, x.dtype, 1)
        if weight.shape[0] != hidden:
            raise _refuse(name, f"weight has {weight.shape[0]} elements, x rows {hidden}")
        out = torch.empty_like(x)
        self._functions[name, x.dtype](
            x.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(), out.data_ptr(), n, hidden,
            eps, torch.get_num_threads(),
        )
        return out

    def rope_write(
        self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor,
        keys: torch.Tensor, values: torch.Tensor, heads: int,
    ) -> torch.Tensor:
        """Rotary embedding (tables ``cos``/``sin [P, head_dim]``: rotary as wide as a head) of the
        q and k heads of ``qkv [n, (heads + 2 kv) * head_dim]`` at ``positions [n]``; k and v
        written into ``keys``/``values [rows_total, kv, P, head_dim]`` at ``rows [n]``; returns
        the rotated q ``[n, heads * head_dim]``. All contiguous, one dtype; positions and rows
        int64 (in range: checked in C before anything is written)."""
        name = "rope_write"
        self._check_model_dtype(name, qkv.dtype)
        _check_dense(name, "qkv", qkv, qkv.dtype, 2)
        for label, t in (("keys", keys), ("values", values)):
            _check_dense(name, label, t, qkv.dtype, 4)
        _check_same_shape(name, values, keys, "values and keys")
        rows_total, kv, max_positions, head_dim = keys.shape
        if head_dim % 2:
            raise _refuse(name, f"head_dim {head_dim} is odd")
        _check_tables(name, cos, sin, qkv.dtype, max_positions, head_dim)
        n = qkv.shape[0]
        if heads < 1 or qkv.shape[1] != (heads + 2 * kv) * head_dim:
            raise _refuse(name, f"qkv width {qkv.shape[1]} != (heads + 2 kv) * head_dim = "
                                f"{(heads + 2 * kv) * head_dim}")
        _check_index(name, "positions", positions, n)
        _check_index(name, "rows", rows, n)
        return _rope(self._functions[name, qkv.dtype], qkv, cos.data_ptr(), sin.data_ptr(), positions, rows,
                     keys.data_ptr(), values.data_ptr(), heads, kv, head_dim, max_positions, rows_total)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """``silu(gate) * up`` of ``gate_up [n, 2 * inter]`` (gate first), ``[n, inter]``; contiguous."""
        name = "silu_mul"
        self._check_model_dtype(name, gate_up.dtype)
        _check_dense(name, "gate_up", gate_up, gate_up.dtype, 2)
        n, width = gate_up.shape
        if width % 2:
            raise _refuse(name, f"gate_up width {width} is odd")
        out = gate_up.new_empty((n, width // 2))
        self._functions[name, gate_up.dtype](gate_up.data_ptr(), out.data_ptr(), n, width // 2,
                                             torch.get_num_threads())
        return out

    def add_layer_norm(
        self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor:
        """``x += delta`` in place (when given), then ``nn.LayerNorm`` of ``x`` with ``weight`` and
        ``bias`` (when given); returns the normed ``[n, hidden]``. ``x``, ``delta`` ``[n, hidden]``,
        ``weight``, ``bias`` ``[hidden]``, one dtype, contiguous."""
        name = "add_layer_norm"
        self._check_model_dtype(name, x.dtype)
        _check_dense(name, "x", x, x.dtype, 2)
        n, hidden = x.shape
        if delta is not None:
            _check_dense(name, "delta", delta, x.dtype, 2)
            _check_same_shape(name, delta, x, "delta and x")
        for label, t in (("weight", weight), ("bias", bias)):
            if t is None:
                continue
            _check_dense(name, label, t, x.dtype, 1)
            if t.shape[0] != hidden:
                raise _refuse(name, f"{label} has {t.shape[0]} elements, x rows {hidden}")
        out = torch.empty_like(x)
        self._functions[name, x.dtype](
            x.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(),
            None if bias is None else bias.data_ptr(), out.data_ptr(), n, hidden, eps, torch.get_num_threads(),
        )
        return out

    def activate(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        """``x [n, width]`` (contiguous) replaced by ``activation`` of it (a name of
        :data:`.architectures.ACTIVATIONS`' values), in place; returns ``x``."""
        name = "activate"
        self._check_model_dtype(name, x.dtype)
        _check_dense(name, "x", x, x.dtype, 2)
        kind = _ACTIVATION_KINDS.get(activation)
        if kind is None:
            raise _refuse(name, f"unknown activation {activation!r} (one of {sorted(_ACTIVATION_KINDS)})")
        check_code(name, self._functions[name, x.dtype](x.data_ptr(), x.shape[0], x.shape[1], kind,
                                                        torch.get_num_threads()), "an unknown activation")
        return x

    def add_into(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y += x`` in place (one dtype, one shape, both contiguous); returns ``y``."""
        name = "add_into"
        self._check_model_dtype(name, y.dtype)
        _check_dense(name, "y", y, y.dtype, y.dim())
        _check_dense(name, "x", x, y.dtype, y.dim())
        _check_same_shape(name, x, y, "x and y")
        self._functions[name, y.dtype](y.data_ptr(), x.data_ptr(), y.numel(), torch.get_num_threads())
        return y


class ModelKernels:
    """The attention and rope kernels bound to one model's KV cache (``keys``/``values
    [layers, rows_total, kv, P, head_dim]``) and rotary tables (``cos``/``sin [P, head_dim]``).

    Why: the native forward calls these kernels once per layer per step, always on the same
    cache and tables. Here their contract is checked once, at :meth:`CpuKernels.bind`; each
    step's index vectors once per step (:meth:`step`); each call checks only its activations
    (dtype, shape, layout) and the layer number. The C code still checks every row, length and
    position it addresses memory by. The bound tensors must not be resized or replaced while
    bound (the native forward allocates them once and never does).
    """

    def __init__(self, kernels: CpuKernels, keys: torch.Tensor, values: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor, heads: int, slopes: torch.Tensor | None = None) -> None:
        name = "bind"
        kernels._check_model_dtype(name, keys.dtype)
        _check_dense(name, "keys", keys, keys.dtype, 5)
        _check_dense(name, "values", values, keys.dtype, 5)
        _check_same_shape(name, values, keys, "values and keys")
        self.layers, self.rows_total, self.kv, self.positions, self.head_dim = keys.shape
        if self.head_dim % 8:
            raise _refuse(name, f"head_dim {self.head_dim} is not a multiple of 8")
        if not self.kv or heads % self.kv or not 1 <= heads // self.kv <= kernels.max_group:
            raise _refuse(name, f"{heads} heads over {self.kv} KV heads (1 to {kernels.max_group} per KV head)")
        _check_tables(name, cos, sin, keys.dtype, self.positions, self.head_dim)
        if slopes is not None:
            _check_dense(name, "slopes", slopes, torch.float32, 1)
            if slopes.shape[0] != heads:
                raise _refuse(name, f"slopes has {slopes.shape[0]} elements, the model {heads} heads")
        self.dtype, self.heads, self.group = keys.dtype, heads, heads // self.kv
        self._tensors = (keys, values, cos, sin)  # held: the pointers below stay valid
        self._held_slopes = slopes
        self.slopes = None if slopes is None else slopes.data_ptr()  # ALiBi: one float32 per query head
        self._layer_bytes = keys.stride(0) * keys.element_size()
        self._keys, self._values, self._cos, self._sin = (t.data_ptr() for t in self._tensors)
        self._attend = kernels._functions["decode_attention", keys.dtype]
        self._rope = kernels._functions["rope_write", keys.dtype]

    def cache_pointers(self, layer: int) -> tuple[int, int]:
        """Addresses of layer ``layer``'s keys and values in the bound cache (the layer stack
        records them once), ``layer`` in range."""
        if not 0 <= layer < self.layers:
            raise _refuse("bind", f"layer {layer} outside 0..{self.layers - 1}")
        offset = layer * self._layer_bytes
        return self._keys + offset, self._values + offset

    def table_pointers(self) -> tuple[int, int]:
        """Addresses of the bound rotary tables ``cos``, ``sin``."""
        return self._cos, self._sin

    def step(self, positions: torch.Tensor, rows: torch.Tensor) -> StepKernels:
        """Bind one step: token ``i`` sits at ``positions[i]`` of KV row ``rows[i]`` (both int64,
        contiguous; their values are checked in C on every call)."""
        _check_index("step", "positions", positions, positions.shape[0] if positions.dim() == 1 else -1)
        _check_index("step", "rows", rows, positions.shape[0])
        return StepKernels(self, positions, rows)


class StepKernels:
    """:class:`ModelKernels` for one step's tokens; see there for what is checked where."""

    def __init__(self, model: ModelKernels, positions: torch.Tensor, rows: torch.Tensor) -> None:
        self.m, self.n = model, positions.shape[0]
        self.positions, self.rows = positions, rows
        self.lengths = positions + 1

    def _check_activation(self, kernel: str, name: str, t: torch.Tensor, width: int) -> None:
        if t.dtype != self.m.dtype or t.dim() != 2 or not t.is_cpu:
            raise _refuse(kernel, f"{name} must be a 2-dimensional CPU tensor of {self.m.dtype}, got {t.dtype} "
                                  f"{tuple(t.shape)} on {t.device}")
        if t.shape[0] != self.n or t.shape[1] != width:
            raise _refuse(kernel, f"{name} is {tuple(t.shape)}, expected {(self.n, width)}")

    def _check_layer(self, kernel: str, layer: int) -> None:
        if not 0 <= layer < self.m.layers:
            raise _refuse(kernel, f"layer {layer} outside 0..{self.m.layers - 1}")

    def rope_write(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        """:meth:`CpuKernels.rope_write` on layer ``layer`` of the bound cache, at this step's
        positions and rows; ``qkv`` contiguous ``[n, (heads + 2 kv) * head_dim]``."""
        m, name = self.m, "rope_write"
        self._check_layer(name, layer)
        self._check_activation(name, "qkv", qkv, (m.heads + 2 * m.kv) * m.head_dim)
        if not qkv.is_contiguous():
            raise _refuse(name, "qkv is not contiguous")
        offset = layer * m._layer_bytes
        return _rope(m._rope, qkv, m._cos, m._sin, self.positions, self.rows, m._keys + offset, m._values + offset,
                     m.heads, m.kv, m.head_dim, m.positions, m.rows_total)

    def attention(self, layer: int, q: torch.Tensor, scale: float) -> torch.Tensor:
        """:meth:`CpuKernels.decode_attention` on layer ``layer`` of the bound cache: token ``i``
        reads its row's columns ``0..positions[i]``; ``q [n, heads * head_dim]``, each row
        contiguous."""
        m, name = self.m, "decode_attention"
        self._check_layer(name, layer)
        width = m.heads * m.head_dim
        self._check_activation(name, "q", q, width)
        if self.n and (q.stride(1) != 1 or q.stride(0) < width):
            raise _refuse(name, f"q rows must be contiguous and not overlap (strides {q.stride()})")
        offset = layer * m._layer_bytes
        return _attend(m._attend, q, m._keys + offset, m._values + offset, self.rows, self.lengths, m.kv, m.group,
                       m.head_dim, m.positions, m.rows_total, scale, m.slopes)


def _cpu_identity() -> str:
    """This CPU's model name and feature flags (what ``-march=native`` compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags")
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in wanted and key not in fields:
            fields[key] = value.strip()
        if not line.strip() and fields:
            break  # the first processor is enough: all cores of a machine are one kind
    return "|".join(f"{k}={fields.get(k, '')}" for k in wanted)


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as ``/proc/cpuinfo`` lists them (``avx2``, ``avx512f``, ...)."""
    return frozenset(_cpu_identity().rpartition("flags=")[2].split())


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def host_refusal() -> str | None:
    """``None`` when this host should build the kernels (x86-64 Linux, AVX2 and FMA, a C
    compiler), else why it cannot: then :func:`load` returning ``None`` is the documented
    fallback; on a host that should, it is a failed build, which :func:`load` logs as a warning."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"{platform.system()} {platform.machine()} (the kernels are x86-64 Linux only)"
    missing = sorted({"avx2", "fma"} - cpu_flags())
    if missing:
        return f"this CPU lacks {', '.join(missing)}"
    if _compiler() is None:
        return "no C compiler (cc or gcc) on PATH"
    return None


def build(cache_dir: Path, flags: tuple[str, ...] = FLAGS, source: Path = SOURCE) -> tuple[Path, bool]:
    """Path of the library built from ``source``, :data:`GEMM_SOURCE` and :data:`STACK_SOURCE` with
    ``flags`` for this machine, and whether this call built it (else it was cached). Raises
    ``RuntimeError`` with the compiler's message when the build fails."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    sources = (source, GEMM_SOURCE, STACK_SOURCE)
    key = hashlib.sha256("\0".join([*(s.read_text() for s in (*sources, HEADER)), version, " ".join(flags),
                                     _cpu_identity()]).encode())
    target = cache_dir / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("building the CPU kernels (%s, once per machine) into %s", source.name, target)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, f"-I{HEADER.parent}", *map(str, sources), "-o", tmp],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {(result.stderr or result.stdout).strip()[-600:]}")
        os.replace(tmp, target)  # atomic: a concurrent loader sees no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target, True


@functools.cache
def load(cache_dir: Path | None = None, sanitize: bool = False) -> tuple[CpuKernels | None, str]:
    """The kernels and how they were had (``"built <path> in <seconds> s"``, a cold start's cost, or
    ``"cached <path>"``), or ``None`` and why not. Once per process and arguments; never raises.
    ``sanitize`` builds them with AddressSanitizer and UBSan (:data:`SANITIZE_FLAGS`), for tests:
    that library loads only in a process started with the ASan runtime preloaded (``LD_PRELOAD``)."""
    refusal = host_refusal()
    if refusal is not None:
        return None, refusal
    folder = (cache_dir or default_cache_dir()) / "kernels"
    try:
        started = time.perf_counter()
        path, built = build(folder, SANITIZE_FLAGS if sanitize else FLAGS)
        elapsed = time.perf_counter() - started
        kernel = CpuKernels(ctypes.CDLL(str(path)), path)
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
        how = f"could not build or load {SOURCE.name}: {exc}"
        logger.warning("CPU kernels: %s; the native forward uses torch ops instead", how)
        return None, how
    return kernel, f"built {path} in {elapsed:.1f} s" if built else f"cached {path}"
