"""The decode attention kernel (``decode_attention.c``): built once per machine, called with ctypes.

Why: at decode, torch's CPU ``scaled_dot_product_attention`` reads every row up to the
step's widest column (the rest masked) and runs well below memory speed at one query per
row: SmolLM2-135M at 32 rows, contexts 100-500, 3.3 ms a layer on a 2-core Zen 1, a third
of the decode step (docs/performance.md). The kernel reads each row only up to its own
length, loads each key and value once for all the query heads that share it, and keeps
the weighted sum in registers: 1.3-1.4 ms a layer on the same shapes and machine.

Build: ``cc -O3 -march=native -fopenmp -shared -fPIC`` into
``$DJL_CACHE_DIR/kernels/decode_attention-<key>.so`` (default ``~/.cache/djl_python``), the
key hashing the source, the compiler's version, the flags and this CPU's model and flags:
``-march=native`` code runs only on CPUs like the one that built it, so an image moved to
another CPU kind builds its own. The build writes a temporary file and renames it, so
workers starting together never load a half-written library. It takes under a second.

Threads: the library links ``libgomp.so.1``, the soname of the OpenMP runtime torch has
already loaded, so the dynamic loader hands it torch's runtime and the kernel runs on as
many threads as ``torch.get_num_threads()`` (passed on every call).

Fallback: where the kernel cannot be built or loaded (no C compiler, no AVX2/FMA, not
Linux, a failed build), :func:`load` returns ``None`` with the reason and the native
forward keeps torch's SDPA; :meth:`DecodeAttention.refusal` names what a model needs that
the kernel lacks (dtype, head size, group size, device).
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

import torch

from djl_python.artifacts.sources import default_cache_dir

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_attention.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
_DTYPES = {torch.float32: "decode_attention_f32", torch.bfloat16: "decode_attention_bf16"}
_ARGTYPES = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
             ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_int]


class DecodeAttention:
    """The loaded kernel. :meth:`__call__` is the kernel's contract (``decode_attention.c``)."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.max_group = int(library.decode_attention_max_group())
        self._functions = {}
        for dtype, name in _DTYPES.items():
            function = getattr(library, name)
            function.restype = ctypes.c_int
            function.argtypes = _ARGTYPES
            self._functions[dtype] = function

    def refusal(self, device: torch.device, dtype: torch.dtype, group: int, head_dim: int) -> str | None:
        """``None`` when the kernel can run a model of this shape, else why not."""
        if device.type != "cpu":
            return f"device {device.type} (the kernel is for CPUs)"
        if dtype not in self._functions:
            return f"dtype {dtype} (float32 and bfloat16 only)"
        if head_dim % 8:
            return f"head_dim {head_dim} is not a multiple of 8"
        if not 1 <= group <= self.max_group:
            return f"{group} query heads per KV head (at most {self.max_group})"
        return None

    def __call__(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Attention of ``q [n, kv * group * head_dim]`` (rows may be strided, each row contiguous)
        over ``keys``/``values [rows_total, kv, P, head_dim]`` (one layer, contiguous), query
        ``b`` reading row ``rows[b]`` columns ``0..lengths[b]-1``; returns ``[n, kv * group *
        head_dim]`` in ``q``'s dtype.

        The caller guarantees what the C code cannot check: ``rows`` within ``keys``, ``1 <=
        lengths <= P``, ``rows``/``lengths`` int64 and contiguous, a shape :meth:`refusal`
        accepted. ``q`` must be the 2-D view it describes."""
        n = q.shape[0]
        _, kv, positions, head_dim = keys.shape
        group = q.shape[1] // (kv * head_dim)
        out = q.new_empty((n, kv * group * head_dim))
        failed = self._functions[q.dtype](
            q.data_ptr(), q.stride(0), keys.data_ptr(), values.data_ptr(), rows.data_ptr(), lengths.data_ptr(),
            out.data_ptr(), n, kv, group, head_dim, positions, scale, torch.get_num_threads(),
        )
        if failed:
            raise MemoryError("decode attention: a thread could not allocate its scratch buffer")
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
    target = cache_dir / f"decode_attention-{key.hexdigest()[:16]}.so"
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
def load(cache_dir: Path | None = None) -> tuple[DecodeAttention | None, str]:
    """The kernel and how it was had (``"built <path>"``/``"cached <path>"``), or ``None`` and why
    not. Once per process and cache folder; never raises."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"{platform.system()} {platform.machine()} (the kernel is x86-64 Linux only)"
    folder = (cache_dir or default_cache_dir()) / "kernels"
    try:
        path, built = _build(folder)
        kernel = DecodeAttention(ctypes.CDLL(str(path)), path)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return None, f"could not build or load {SOURCE.name}: {exc}"
    return kernel, f"{'built' if built else 'cached'} {path}"
