"""The native forward's CPU kernels (``cpu_kernels.c``): built once per machine, called with ctypes.

Two kinds, one library:

* **Decode attention.** Why: at decode, torch's CPU ``scaled_dot_product_attention`` reads every row up to the
step's widest column (the rest masked) and runs well below memory speed at one query per
row: SmolLM2-135M at 32 rows, contexts 100-500, 3.3 ms a layer on a 2-core Zen 1, a third
of the decode step (docs/performance.md). The kernel reads each row only up to its own
length, loads each key and value once for all the query heads that share it, and keeps
the weighted sum in registers: 1.3-1.4 ms a layer on the same shapes and machine. A
  prompt token is the same kind of query (its row, up to its position), so the native
  forward runs a whole step's attention, decode rows and prompts, as one call a layer.
* **Elementwise** (residual add + RMS norm, rotary embedding + K/V write, SiLU-gated
  product). Why: at a decode step's sizes each torch op costs its dispatch, not its
  arithmetic (~30 ops a layer, ~20 ms a step of SmolLM2 at 32 rows); each kernel is one
  call doing the same operations with the same roundings (the C file says how).

Build: ``cc -O3 -march=native -ffp-contract=off -fopenmp -shared -fPIC`` into
``$DJL_CACHE_DIR/kernels/cpu_kernels-<key>.so`` (default ``~/.cache/djl_python``), the
key hashing the source, the compiler's version, the flags and this CPU's model and flags:
``-march=native`` code runs only on CPUs like the one that built it, so an image moved to
another CPU kind builds its own. The build writes a temporary file and renames it, so
workers starting together never load a half-written library. It takes under a second.

Threads: the library links ``libgomp.so.1``, the soname of the OpenMP runtime torch has
already loaded, so the dynamic loader hands it torch's runtime and the kernels run on as
many threads as ``torch.get_num_threads()`` (passed on every call; the elementwise kernels
use them only on a prefill's sizes).

Fallback: where the library cannot be built or loaded (no C compiler, no AVX2/FMA, not
Linux, a failed build), :func:`load` returns ``None`` with the reason and the native
forward keeps torch's SDPA and ops; :meth:`CpuKernels.refusal` names what a model needs
that the kernels lack (dtype, head size, group size, device).
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
from pathlib import Path
from typing import Any

import torch

from djl_python.artifacts.sources import default_cache_dir

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_P, _I, _F, _T = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
# name: (restype, argtypes), as declared in cpu_kernels.c; each exists as name_f32 and name_bf16.
_SIGNATURES = {
    "decode_attention": (ctypes.c_int, [_P, _I, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _F, _T]),
    "add_rms_norm": (None, [_P, _P, _P, _P, _I, _I, _F, _T]),
    "rope_write": (None, [_P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _T]),
    "silu_mul": (None, [_P, _P, _I, _I, _T]),
}


class CpuKernels:
    """The loaded library. Each method states the contract of its C function; the caller
    guarantees what C cannot check (shapes, contiguity, indices in range, one dtype for all
    tensors, a model :meth:`refusal` accepted)."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.max_group = int(library.decode_attention_max_group())
        self._functions: dict[tuple[str, torch.dtype], Any] = {}
        for name, (restype, argtypes) in _SIGNATURES.items():
            for dtype, suffix in _SUFFIX.items():
                function = getattr(library, f"{name}_{suffix}")
                function.restype = restype
                function.argtypes = argtypes
                self._functions[name, dtype] = function

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

    def decode_attention(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Attention of ``q [n, kv * group * head_dim]`` (rows may be strided, each row contiguous)
        over ``keys``/``values [rows_total, kv, P, head_dim]`` (one layer, contiguous), query
        ``b`` reading row ``rows[b]`` columns ``0..lengths[b]-1``; returns ``[n, kv * group *
        head_dim]`` in ``q``'s dtype. ``rows`` within ``keys``, ``1 <= lengths <= P``, both
        int64 and contiguous."""
        n = q.shape[0]
        _, kv, positions, head_dim = keys.shape
        group = q.shape[1] // (kv * head_dim)
        out = q.new_empty((n, kv * group * head_dim))
        failed = self._functions["decode_attention", q.dtype](
            q.data_ptr(), q.stride(0), keys.data_ptr(), values.data_ptr(), rows.data_ptr(), lengths.data_ptr(),
            out.data_ptr(), n, kv, group, head_dim, positions, scale, torch.get_num_threads(),
        )
        if failed:
            raise MemoryError("decode attention: a thread could not allocate its scratch buffer")
        return out

    def add_rms_norm(
        self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """``x += delta`` in place (when given), then LlamaRMSNorm of ``x`` with ``weight``;
        returns the normed ``[n, hidden]``. ``x``, ``delta``, ``weight`` contiguous."""
        n, hidden = x.shape
        out = torch.empty_like(x)
        self._functions["add_rms_norm", x.dtype](
            x.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(), out.data_ptr(), n, hidden,
            eps, torch.get_num_threads(),
        )
        return out

    def rope_write(
        self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor,
        keys: torch.Tensor, values: torch.Tensor, heads: int,
    ) -> torch.Tensor:
        """Rotary embedding (tables ``cos``/``sin [P, head_dim]``) of the q and k heads of
        ``qkv [n, (heads + 2 kv) * head_dim]`` at ``positions [n]``; k and v written into
        ``keys``/``values [rows_total, kv, P, head_dim]`` at ``rows [n]``; returns the
        rotated q ``[n, heads * head_dim]``. All contiguous; positions and rows int64."""
        n = qkv.shape[0]
        _, kv, max_positions, head_dim = keys.shape
        q = qkv.new_empty((n, heads * head_dim))
        self._functions["rope_write", qkv.dtype](
            qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), positions.data_ptr(), rows.data_ptr(), q.data_ptr(),
            keys.data_ptr(), values.data_ptr(), n, heads, kv, head_dim, max_positions, torch.get_num_threads(),
        )
        return q

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """``silu(gate) * up`` of ``gate_up [n, 2 * inter]`` (gate first), ``[n, inter]``; contiguous."""
        n, width = gate_up.shape
        out = gate_up.new_empty((n, width // 2))
        self._functions["silu_mul", gate_up.dtype](gate_up.data_ptr(), out.data_ptr(), n, width // 2,
                                                   torch.get_num_threads())
        return out


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


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(cache_dir: Path) -> tuple[Path, bool]:
    """Path of the built library for this machine and whether this call built it. Raises
    ``RuntimeError`` with the compiler's message when the build fails."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _cpu_identity()]).encode())
    target = cache_dir / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {(result.stderr or result.stdout).strip()[-600:]}")
        os.replace(tmp, target)  # atomic: a concurrent loader sees no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target, True


@functools.cache
def load(cache_dir: Path | None = None) -> tuple[CpuKernels | None, str]:
    """The kernels and how they were had (``"built <path>"``/``"cached <path>"``), or ``None`` and
    why not. Once per process and cache folder; never raises."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"{platform.system()} {platform.machine()} (the kernels are x86-64 Linux only)"
    folder = (cache_dir or default_cache_dir()) / "kernels"
    try:
        path, built = _build(folder)
        kernel = CpuKernels(ctypes.CDLL(str(path)), path)
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
        return None, f"could not build or load {SOURCE.name}: {exc}"
    return kernel, f"{'built' if built else 'cached'} {path}"
