"""The CPU kernels (``backends/pytorch/native/cpu_kernels.py``, ``cpu_kernels.c``): decode attention and elementwise.

The reference is torch's ``scaled_dot_product_attention`` on each row's valid columns, run
row by row (no mask, no padding): what the kernel must compute. A kernel test skips only
where this host cannot build the kernels (``host_refusal``: not x86-64 Linux, no AVX2/FMA,
no C compiler); where it should build them and did not, every kernel test fails, so a broken
``cpu_kernels.c`` cannot pass as a fallback.

``make test`` runs this module twice: as is, and with ``DJL_TEST_SANITIZED_KERNELS=1`` in a
process with the ASan runtime preloaded (``scripts/sanitized-kernels.sh``), where ``KERNEL``
and the backend's kernels are the AddressSanitizer + UBSan build: any out-of-bounds access or
undefined behaviour aborts the run.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from djl_python.backends.pytorch import backend as pytorch_backend
from djl_python.backends.base import Backend
from djl_python.backends.pytorch.native import cpu_kernels
from djl_python.backends.pytorch.native.cpu_kernels import KernelContractError
from djl_python.backends.pytorch.backend import PyTorchBackend

SANITIZED = os.environ.get("DJL_TEST_SANITIZED_KERNELS") == "1"
KERNEL, HOW = cpu_kernels.load(sanitize=SANITIZED)
HOST_REFUSAL = cpu_kernels.host_refusal()


def kernel_or_fail(kernel: cpu_kernels.CpuKernels | None, how: str, refusal: str | None) -> cpu_kernels.CpuKernels:
    """The kernels; a skip only where the host cannot build them, a failure where it should."""
    if kernel is not None:
        return kernel
    if refusal is not None:
        pytest.skip(f"this host cannot build the CPU kernels: {refusal}")
    pytest.fail(f"this host should build the CPU kernels and did not: {how}")


@pytest.fixture
def kernel() -> cpu_kernels.CpuKernels:
    return kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)


needs_kernel = pytest.mark.usefixtures("kernel")
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(autouse=True)
def _backend_uses_the_build_under_test(monkeypatch) -> None:
    """Under the sanitizer run, the backend's forward calls the sanitized build too."""
    if SANITIZED:
        monkeypatch.setattr(pytorch_backend, "load_cpu_kernels", lambda: (KERNEL, HOW))


def _reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rows: list[int], lengths: list[int],
               group: int) -> torch.Tensor:
    """SDPA per query on its row's first ``length`` columns, in fp64: ``[n, kv * group * d]``."""
    n, (_, kv, _, d) = q.shape[0], keys.shape
    out = []
    for b in range(n):
        qb = q[b].view(kv, group, d).double()
        k = keys[rows[b], :, : lengths[b]].double()
        v = values[rows[b], :, : lengths[b]].double()
        out.append(F.scaled_dot_product_attention(qb, k, v).reshape(-1))
    return torch.stack(out)


@needs_kernel
@pytest.mark.parametrize(("kv", "group", "head_dim"), [(3, 3, 64), (2, 1, 32), (1, 8, 16), (4, 2, 24), (2, 4, 128),
                                                       (1, 48, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_sdpa_on_each_rows_own_columns(kv: int, group: int, head_dim: int, dtype: torch.dtype) -> None:
    torch.manual_seed(kv * 100 + group * 10 + head_dim)
    total_rows, positions = 9, 70
    keys = torch.randn(total_rows, kv, positions, head_dim, dtype=dtype)
    values = torch.randn(total_rows, kv, positions, head_dim, dtype=dtype)
    # Poison the columns past each row's length: the kernel must not read them.
    rows, lengths = [5, 0, 8, 2, 3], [1, 70, 9, 33, 8]
    for row, length in zip(rows, lengths):
        keys[row, :, length:] = float("nan")
        values[row, :, length:] = float("nan")
    n = len(rows)
    # q rows strided, as the forward passes them (a slice of the fused QKV output).
    qkv = torch.randn(n, (kv * group + 2 * kv) * head_dim, dtype=dtype)
    q = qkv[:, : kv * group * head_dim]
    assert not q.is_contiguous()
    scale = head_dim ** -0.5
    got = KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale)
    assert got.dtype == dtype and got.shape == (n, kv * group * head_dim)
    want = _reference(q, keys, values, rows, lengths, group)
    # fp32: summation order and the polynomial exp (~2 ulp); bf16: one rounding of the output.
    tolerance = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(got.double(), want, **tolerance)


@needs_kernel
@pytest.mark.parametrize(("kv", "group"), [(4, 1), (1, 8), (2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_alibi_slopes_add_slope_times_column_to_each_heads_scores(kv: int, group: int, dtype: torch.dtype) -> None:
    """BLOOM's bias: head h's score at column j gets slopes[h] * j after the scale; SDPA with that
    additive bias is the reference, on each row's own columns, a prompt tile included."""
    torch.manual_seed(kv * 10 + group)
    head_dim, total_rows, positions = 16, 4, 40
    heads = kv * group
    keys = torch.randn(total_rows, kv, positions, head_dim, dtype=dtype)
    values = torch.randn(total_rows, kv, positions, head_dim, dtype=dtype)
    rows, lengths = [1, 3, 3, 3, 0], [40, 7, 8, 9, 1]
    q = torch.randn(len(rows), heads * head_dim, dtype=dtype)
    slopes = torch.tensor([2.0 ** -(i + 1) for i in range(heads)])
    scale = head_dim ** -0.5
    got = KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale, slopes)
    without = KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale)
    for b, (row, length) in enumerate(zip(rows, lengths)):
        qb = q[b].view(kv, group, 1, head_dim).double()
        k = keys[row, :, :length].double()[:, None]
        v = values[row, :, :length].double()[:, None]
        bias = (slopes.double()[:, None] * torch.arange(length).double()).view(kv, group, 1, length)
        want = F.scaled_dot_product_attention(qb, k, v, attn_mask=bias).reshape(-1)
        tolerance = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
        torch.testing.assert_close(got[b].double(), want, **tolerance)
    assert not torch.equal(got[0], without[0])  # the bias acted (a row of 40 columns)
    with pytest.raises(KernelContractError, match="slopes has 3 elements"):
        KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale, torch.ones(3))
    with pytest.raises(KernelContractError):
        KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale, slopes.double())


def _prompt_step(kv: int, group: int, head_dim: int, dtype: torch.dtype) -> dict:
    """A step as the forward makes one: two decode rows, a 21-token prompt from column 0 (tiles
    of 8, 8 and 5 tokens), a decode row, a 13-token continuation after a 30-column cached prefix
    (lengths 31..43: tiles of 8 and 5), and an 11-token prompt (tiles of 8 and 3); columns past
    each row's last length are NaN (never read)."""
    torch.manual_seed(kv * 100 + group * 10 + head_dim)
    positions = 48
    keys = torch.randn(7, kv, positions, head_dim, dtype=dtype)
    values = torch.randn(7, kv, positions, head_dim, dtype=dtype)
    rows = [5, 1] + [2] * 21 + [0] + [4] * 13 + [6] * 11
    lengths = [17, 40] + list(range(1, 22)) + [8] + list(range(31, 44)) + list(range(1, 12))
    for row in set(rows):
        last = max(length for r, length in zip(rows, lengths) if r == row)
        keys[row, :, last:] = float("nan")
        values[row, :, last:] = float("nan")
    qkv = torch.randn(len(rows), (kv * group + 2 * kv) * head_dim, dtype=dtype)
    return {"q": qkv[:, : kv * group * head_dim], "keys": keys, "values": values, "rows": rows, "lengths": lengths,
            "scale": head_dim ** -0.5}


# Groups of 1 to 8 query heads: chunks of the tile's queries of every size; head_dim 24 and 72
# end in 8-column pieces, 128 in two 64-column ones.
PROMPT_SHAPES = [(3, 3, 64), (2, 1, 32), (8, 4, 64), (1, 5, 24), (1, 7, 16), (1, 8, 72), (2, 2, 128)]


@needs_kernel
@pytest.mark.parametrize(("kv", "group", "head_dim"), PROMPT_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_prompt_tokens_attend_causally_as_sdpa(kv: int, group: int, head_dim: int, dtype: torch.dtype) -> None:
    """Prompt tokens, attended in tiles of consecutive tokens of one row, each get SDPA over its
    own columns, beside decode rows and after a cached prefix."""
    step = _prompt_step(kv, group, head_dim, dtype)
    rows, lengths = step["rows"], step["lengths"]
    got = KERNEL.decode_attention(step["q"], step["keys"], step["values"], torch.tensor(rows), torch.tensor(lengths),
                                  step["scale"])
    want = _reference(step["q"], step["keys"], step["values"], rows, lengths, group)
    tolerance = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(got.double(), want, **tolerance)


@needs_kernel
@pytest.mark.parametrize(("kv", "group", "head_dim"), PROMPT_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_tokens_attention_is_the_same_bits_alone_or_in_any_call(kv: int, group: int, head_dim: int,
                                                                  dtype: torch.dtype) -> None:
    """What chunked prefill, prefix caching and speculative verification rest on: a token's
    attention does not depend on the tokens attended in the same call (tiles, or the queries
    chunked beside it). One call for the whole step, one call per token, and the step in
    reverse order (other tiles: each run cut from its other end, its lengths falling) give the
    same bits."""
    step = _prompt_step(kv, group, head_dim, dtype)
    q, keys, values, rows, lengths, scale = (step[k] for k in ("q", "keys", "values", "rows", "lengths", "scale"))
    whole = KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale)
    alone = torch.cat([KERNEL.decode_attention(q[b : b + 1], keys, values, torch.tensor(rows[b : b + 1]),
                                               torch.tensor(lengths[b : b + 1]), scale) for b in range(len(rows))])
    order = list(range(len(rows)))[::-1]
    reverse = KERNEL.decode_attention(q[order].contiguous(), keys, values, torch.tensor([rows[b] for b in order]),
                                      torch.tensor([lengths[b] for b in order]), scale)
    assert torch.equal(_bits(whole), _bits(alone))
    assert torch.equal(_bits(whole), _bits(reverse.flip(0)))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers: ``torch.equal`` on floats holds -0.0 equal to 0.0."""
    return t.view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


@pytest.fixture(scope="module")
def avx2_build() -> cpu_kernels.CpuKernels:
    """The kernels built without AVX-512, as on an AVX2-only CPU (one query per pass over the keys
    and values; the 8-wide float32 matmul), where this host has AVX-512F; elsewhere this host's
    build is that one, which the other tests hold, and there is nothing to compare."""
    kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)
    if "avx512f" not in cpu_kernels.cpu_flags():
        pytest.skip("this host's build is already the one without AVX-512")
    flags = (cpu_kernels.SANITIZE_FLAGS if SANITIZED else cpu_kernels.FLAGS) + ("-mno-avx512f",)
    path, _ = cpu_kernels.build(cpu_kernels.default_cache_dir() / "kernels-test-avx2", flags)
    build = cpu_kernels.CpuKernels(ctypes.CDLL(str(path)), path)
    if build.vector_bits != 256:  # GCC keeps AVX-512 under -mno-avx512f where -march enables AVX10
        pytest.skip("this compiler kept AVX-512 code under -mno-avx512f (an AVX10 CPU): no AVX2 build here")
    return build


@pytest.fixture(params=["host", "avx2"])
def each_build(request) -> cpu_kernels.CpuKernels:
    """This host's build, and the build without AVX-512 (skipped where this host's is that one)."""
    if request.param == "avx2":
        return request.getfixturevalue("avx2_build")
    return kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)


@needs_kernel
@pytest.mark.parametrize(("kv", "group", "head_dim"), PROMPT_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_avx2_build_attends_to_the_same_bits(avx2_build: cpu_kernels.CpuKernels, kv: int, group: int,
                                                 head_dim: int, dtype: torch.dtype) -> None:
    """One query per pass (AVX2's registers) and three (AVX-512VL's) are the same arithmetic per
    query: the AVX2 build gives this host's bits on a step of prompts and decode rows."""
    step = _prompt_step(kv, group, head_dim, dtype)
    args = (step["q"], step["keys"], step["values"], torch.tensor(step["rows"]), torch.tensor(step["lengths"]),
            step["scale"])
    assert torch.equal(_bits(avx2_build.decode_attention(*args)), _bits(KERNEL.decode_attention(*args)))


@needs_kernel
def test_kernel_handles_extreme_scores_without_overflow() -> None:
    """Large logits (softmax of scores ~1e3 apart) and a single column: max subtraction keeps
    exp in range, the single column gets weight 1 exactly."""
    keys = torch.zeros(1, 1, 8, 8)
    values = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    keys[0, 0, :, 0] = torch.tensor([0.0, 100.0, -100.0, 50.0, 0, 0, 0, 0])
    q = torch.zeros(2, 8)
    q[:, 0] = 80.0
    got = KERNEL.decode_attention(q, keys, values, torch.tensor([0, 0]), torch.tensor([4, 1]), 1.0)
    torch.testing.assert_close(got[0], values[0, 0, 1])  # column 1 dominates by e^4000
    torch.testing.assert_close(got[1], values[0, 0, 0])  # one column: its value
    assert torch.isfinite(got).all()


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scores_far_from_zero_match_sdpa(dtype: torch.dtype) -> None:
    """Scores of 100-125 (and of -125 to -100): exp of an unshifted score would overflow (or
    flush to zero), so only a softmax that subtracts each query's maximum gets them right."""
    torch.manual_seed(11)
    d, length = 16, 29
    keys = torch.randn(2, 1, 32, d).to(dtype)
    values = torch.randn(2, 1, 32, d).to(dtype)
    # q along the first axis only; column j's key there spreads the scores over [lo, lo + 25].
    keys[:, :, :, 0] = torch.linspace(0, 1, 32)[None, None].to(dtype)
    keys[:, :, :, 1:] = 0
    q = torch.zeros(4, d, dtype=dtype)
    scale = d ** -0.5  # the reference's (SDPA's default)
    q[:, 0] = 25.0 / scale
    q[:, 1] = torch.tensor([100.0, -125.0, 100.0, -125.0], dtype=dtype) / scale
    keys[:, :, :, 1] = 1.0  # every column adds q[:, 1]: scores in [100, 125] or [-125, -100]
    rows, lengths = [0, 0, 1, 1], [length, length, 32, 5]
    got = KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), scale)
    want = _reference(q, keys, values, rows, lengths, 1)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(got.double(), want, **tolerance)


@needs_kernel
@pytest.mark.parametrize("poison", ["nan_q", "inf_q", "neg_inf_q", "nan_key", "nan_value"])
def test_nan_and_inf_propagate_as_in_sdpa(poison: str) -> None:
    """Non-finite inputs give SDPA's non-finite outputs, element for element: the kernel must
    not hide a model's overflow behind a finite average."""
    torch.manual_seed(12)
    d = 16
    keys, values = torch.randn(3, 1, 10, d), torch.randn(3, 1, 10, d)
    q = torch.randn(3, d)
    if poison == "nan_q":
        q[1, 3] = float("nan")
    elif poison == "inf_q":
        q[1, 3] = float("inf")
    elif poison == "neg_inf_q":
        q[1, :] = float("-inf")
    elif poison == "nan_key":
        keys[2, 0, 4, 7] = float("nan")
    else:
        values[2, 0, 4, 7] = float("nan")
    rows, lengths = [0, 1, 2], [10, 6, 8]
    got = KERNEL.decode_attention(q, keys, values, torch.tensor(rows), torch.tensor(lengths), d ** -0.5).double()
    want = _reference(q, keys, values, rows, lengths, 1) * 1.0
    assert not torch.isfinite(want).all()  # the poison reached the reference
    assert torch.equal(torch.isnan(got), torch.isnan(want)), (got, want)
    assert torch.equal(torch.isinf(got), torch.isinf(want)), (got, want)
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], atol=2e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate_through_the_elementwise_kernels(dtype: torch.dtype) -> None:
    """As torch: NaN stays NaN, and an infinite result stays infinite (a bf16 store must round
    Inf to Inf, not to NaN)."""
    x = torch.randn(3, 16).to(dtype)
    x[1, 5] = float("nan")
    normed = KERNEL.add_rms_norm(x.clone(), None, torch.ones(16, dtype=dtype), 1e-5)
    assert torch.isnan(normed[1]).all() and torch.isfinite(normed[[0, 2]]).all()  # as LlamaRMSNorm: the row
    gate_up = torch.randn(2, 32).to(dtype) + 2
    gate_up[0, 3], gate_up[1, 16 + 2], gate_up[0, 16 + 5] = float("nan"), float("inf"), float("-inf")
    out = KERNEL.silu_mul(gate_up)
    want = F.silu(gate_up[:, :16]) * gate_up[:, 16:]
    assert torch.isinf(want).sum() == 2
    assert torch.equal(torch.isnan(out), torch.isnan(want)) and torch.equal(torch.isinf(out), torch.isinf(want))
    assert torch.equal(out[torch.isinf(want)], want[torch.isinf(want)])  # the same signs


def _attention_inputs(dtype: torch.dtype = torch.float32, kv: int = 2, group: int = 2, d: int = 16, n: int = 3,
                      rows_total: int = 4, positions: int = 12) -> dict:
    return {
        "q": torch.randn(n, kv * group * d, dtype=dtype),
        "keys": torch.randn(rows_total, kv, positions, d, dtype=dtype),
        "values": torch.randn(rows_total, kv, positions, d, dtype=dtype),
        "rows": torch.tensor([0, 3, 1][:n]),
        "lengths": torch.tensor([1, 12, 5][:n]),
        "scale": d ** -0.5,
    }


def _broken(case: str) -> dict:
    a = _attention_inputs()
    if case == "q dtype differs from the cache":
        a["q"] = a["q"].bfloat16()
    elif case == "float16":
        a = {k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in a.items()}
    elif case == "int32 rows":
        a["rows"] = a["rows"].int()
    elif case == "int32 lengths":
        a["lengths"] = a["lengths"].int()
    elif case == "strided rows":
        a["rows"] = torch.tensor([0, 9, 3, 9, 1])[::2]
    elif case == "stride-0 q":
        a["q"] = torch.randn(1, a["q"].shape[1]).expand(3, -1)
    elif case == "non-contiguous keys":
        a["keys"] = a["keys"].transpose(2, 3).contiguous().transpose(2, 3)
    elif case == "q columns strided":
        a["q"] = torch.randn(3, 2 * a["q"].shape[1])[:, ::2]
    elif case == "group > max":
        a = _attention_inputs(kv=1, group=65)
    elif case == "head_dim not a multiple of 8":
        a = _attention_inputs(d=12)
    elif case == "values shape differs":
        a["values"] = a["values"][:, :, :6].contiguous()
    elif case == "row out of range":
        a["rows"] = torch.tensor([0, 4, 1])
    elif case == "first row out of range":
        a["rows"] = torch.tensor([4, 0, 1])
    elif case == "first length past P":
        a["lengths"] = torch.tensor([13, 1, 5])
    elif case == "negative row":
        a["rows"] = torch.tensor([0, -1, 1])
    elif case == "length past P":
        a["lengths"] = torch.tensor([1, 13, 5])
    elif case == "length 0":
        a["lengths"] = torch.tensor([1, 0, 5])
    elif case == "rows shorter than q":
        a["rows"] = torch.tensor([0, 3])
    return a


@needs_kernel
@pytest.mark.parametrize("case", [
    "q dtype differs from the cache", "float16", "int32 rows", "int32 lengths", "strided rows", "stride-0 q",
    "non-contiguous keys", "q columns strided", "group > max", "head_dim not a multiple of 8",
    "values shape differs", "row out of range", "first row out of range", "first length past P", "negative row",
    "length past P", "length 0", "rows shorter than q",
])
def test_attention_refuses_inputs_outside_its_contract(case: str) -> None:
    """Each case, passed to the C code as is, reads out of bounds or returns garbage (a bf16 q
    over an fp32 cache is read as bf16); the wrapper or the kernel refuses it first."""
    with pytest.raises(KernelContractError):
        KERNEL.decode_attention(**_broken(case))


@needs_kernel
def test_elementwise_kernels_refuse_inputs_outside_their_contract() -> None:
    x, w = torch.randn(4, 16), torch.randn(16)
    for args in [(x.t(), None, torch.randn(4)), (x, torch.randn(4, 8), w), (x, None, torch.randn(15)),
                 (x, None, w.bfloat16()), (x.bfloat16(), x, w.bfloat16()), (x.half(), None, w.half())]:
        with pytest.raises(KernelContractError):
            KERNEL.add_rms_norm(*args, 1e-5)
    for gate_up in (torch.randn(3, 15), torch.randn(3, 32)[:, ::2], torch.randn(3, 16).half(), torch.randn(16)):
        with pytest.raises(KernelContractError):
            KERNEL.silu_mul(gate_up)
    heads, kv, d, positions, rows_total = 2, 1, 8, 6, 3
    good = {
        "qkv": torch.randn(2, (heads + 2 * kv) * d), "cos": torch.randn(positions, d), "sin": torch.randn(positions, d),
        "positions": torch.tensor([0, 5]), "rows": torch.tensor([2, 0]),
        "keys": torch.zeros(rows_total, kv, positions, d), "values": torch.zeros(rows_total, kv, positions, d),
        "heads": heads,
    }
    KERNEL.rope_write(**good)  # the control: accepted
    for change in [{"cos": torch.randn(positions, d // 2)},  # a partial rotary's table: narrower than a head
                   {"sin": torch.randn(positions - 1, d)}, {"positions": torch.tensor([0, 6])},
                   {"positions": torch.tensor([6, 0])},
                   {"positions": torch.tensor([-1, 0])}, {"rows": torch.tensor([3, 0])},
                   {"rows": torch.tensor([0, 1], dtype=torch.int32)}, {"heads": 3},
                   {"values": torch.zeros(rows_total, kv, positions, d).bfloat16()},
                   {"qkv": torch.randn(2, 2 * (heads + 2 * kv) * d)[:, ::2]}]:
        keys_before = good["keys"].clone()
        with pytest.raises(KernelContractError):
            KERNEL.rope_write(**(good | change))
        assert torch.equal(good["keys"], keys_before)  # refused before anything was written


@needs_kernel
def test_refusal_names_what_the_kernel_lacks() -> None:
    cpu = torch.device("cpu")
    assert KERNEL.refusal(cpu, torch.float32, 3, 64) is None
    assert "float16" in KERNEL.refusal(cpu, torch.float16, 3, 64)
    assert "head_dim 12" in KERNEL.refusal(cpu, torch.float32, 3, 12)
    assert KERNEL.refusal(cpu, torch.float32, 48, 64) is None  # StarCoder: 48 query heads over one K/V head
    assert "65 query heads" in KERNEL.refusal(cpu, torch.float32, 65, 64)
    assert "cuda" in KERNEL.refusal(torch.device("cuda"), torch.float32, 3, 64)


@needs_kernel
def test_build_is_cached_per_folder(tmp_path) -> None:
    build = cpu_kernels.load.__wrapped__  # functools.cache would answer from memory
    kernel, how = build(tmp_path)
    assert kernel is not None and how.startswith("built ")
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].endswith(".so")  # no temporary left behind
    again, how_again = build(tmp_path)
    built_message = re.fullmatch(r"built (.+\.so) in \d+\.\d s", how)  # a cold start's cost, for the log
    assert built_message is not None, how
    assert again is not None and how_again == f"cached {built_message[1]}"


def test_the_package_ships_every_file_the_build_reads() -> None:
    """A non-editable install (the Docker images) carries only the package data pyproject.toml
    names: every source and header the kernel build reads must match one of its patterns."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["djl_python.backends.pytorch.native"]
    assert len(cpu_kernels.BUILD_INPUTS) == 4 and all(path.exists() for path in cpu_kernels.BUILD_INPUTS)
    for path in cpu_kernels.BUILD_INPUTS:
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), path.name


def test_a_failed_build_falls_back_with_the_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    kernel, how = cpu_kernels.load.__wrapped__(tmp_path)
    assert kernel is None
    assert "could not build" in how and "false failed" in how
    assert not list((tmp_path / "kernels").glob("*.so*"))  # nothing half-written is left to load


@needs_kernel
def test_backend_tokens_and_logits_with_and_without_the_kernel(tiny_model_factory) -> None:
    """The same tiny llama, kernel against SDPA: equal greedy tokens over a mixed batch whose
    rows join at different lengths, logits equal to float rounding."""
    folder = tiny_model_factory("llama")
    backends = {k: PyTorchBackend.load(folder, max_slots=4, cpu_kernels=k) for k in (True, False)}
    assert backends[True].info.extra["native_ops"] == "cpu-kernels"
    assert backends[False].info.extra["native_ops"].startswith("torch")
    prompts = [[5, 9, 2], list(range(3, 40)), [7] * 11]
    traces = {}
    for use, backend in backends.items():
        logits = backend.prefill([0, 1, 2], prompts)
        tokens = [[int(t)] for t in logits.argmax(-1)]
        positions = [len(p) for p in prompts]
        steps = []
        for _ in range(12):
            logits = backend.decode([0, 1, 2], [t[-1] for t in tokens], positions)
            steps.append(logits)
            for seq, t in zip(tokens, logits.argmax(-1).tolist()):
                seq.append(t)
            positions = [p + 1 for p in positions]
        traces[use] = tokens, steps
    assert traces[True][0] == traces[False][0]
    for got, want in zip(traces[True][1], traces[False][1]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_one_forward_step_gives_what_the_two_calls_give(use_kernel: bool, tiny_model_factory) -> None:
    """``decode_and_prefill`` on the native forward (one forward: decode rows and prompts
    packed together) against a twin backend making the two calls: equal greedy tokens for the
    running rows and the joining prompts, logits equal to float rounding, and the joined rows
    decode on identically afterwards."""
    if use_kernel:
        kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)
    folder = tiny_model_factory("llama")
    fused, twin = (PyTorchBackend.load(folder, max_slots=6, cpu_kernels=use_kernel) for _ in range(2))
    running = {0: [4, 8, 15, 16], 2: list(range(5, 30)), 3: [9] * 7}
    joining = {1: [23, 42, 7], 5: list(range(40, 90))}
    tokens = {}
    for backend in (fused, twin):
        logits = backend.prefill(sorted(running), [running[s] for s in sorted(running)])
        tokens = {s: [int(t)] for s, t in zip(sorted(running), logits.argmax(-1))}
    decode_slots = sorted(running)
    last = [tokens[s][-1] for s in decode_slots]
    positions = [len(running[s]) for s in decode_slots]
    joined = sorted(joining)
    prompts = [joining[s] for s in joined]
    forward, calls = fused._forward, []
    step = forward.step
    forward.step = lambda decode, prefill, starts=None: calls.append((decode, prefill)) or step(decode, prefill, starts)
    got_decode, got_prefill = fused.decode_and_prefill(decode_slots, last, positions, joined, prompts)
    assert len(calls) == 1 and calls[0][0] is not None and calls[0][1] is not None  # one forward, both parts
    want_decode, want_prefill = Backend.decode_and_prefill(twin, decode_slots, last, positions, joined, prompts)
    torch.testing.assert_close(got_decode, want_decode, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_prefill, want_prefill, atol=1e-4, rtol=1e-4)
    assert got_decode.argmax(-1).tolist() == want_decode.argmax(-1).tolist()
    assert got_prefill.argmax(-1).tolist() == want_prefill.argmax(-1).tolist()
    # Every row, old and new, goes on from what the one forward wrote.
    slots = sorted(running | joining)
    nxt = dict(zip(decode_slots, got_decode.argmax(-1).tolist())) | dict(zip(joined, got_prefill.argmax(-1).tolist()))
    pos = {s: len(running[s]) + 1 for s in running} | {s: len(joining[s]) for s in joining}
    after = [b.decode(slots, [nxt[s] for s in slots], [pos[s] for s in slots]) for b in (fused, twin)]
    torch.testing.assert_close(after[0], after[1], atol=1e-4, rtol=1e-4)


def test_one_forward_step_refuses_a_slot_in_both_parts(tiny_model_factory) -> None:
    backend = PyTorchBackend.load(tiny_model_factory("llama"), max_slots=3)
    backend.prefill([0], [[1, 2, 3]])
    with pytest.raises(ValueError, match=r"both decoded and prefilled in one step: \[0\]"):
        backend.decode_and_prefill([0], [4], [3], [0, 1], [[5, 6], [7]])


# -- elementwise kernels against the torch ops they replace (step_ops.TorchOps' arithmetic) --




@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_delta", [False, True])
@pytest.mark.parametrize("hidden", [96, 100])  # 100: the tail past the last 8 columns
def test_add_rms_norm_matches_llama_rms_norm(dtype: torch.dtype, with_delta: bool, hidden: int) -> None:
    torch.manual_seed(3)
    x, delta = torch.randn(37, hidden, dtype=dtype), torch.randn(37, hidden, dtype=dtype)
    weight = torch.randn(hidden, dtype=dtype)
    eps = 1e-5
    want_x = x + delta if with_delta else x.clone()
    h = want_x.float()
    want = weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)
    got = KERNEL.add_rms_norm(x, delta if with_delta else None, weight, eps)
    assert torch.equal(x, want_x)  # the residual add: in place, the same rounding as torch's add
    # The sum of squares may be summed in another order: a last-bit difference, before rounding to bf16.
    tolerance = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 8e-3}
    torch.testing.assert_close(got, want, **tolerance)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
# 16: half a head 8 lanes wide (the vector loop); 24 and 12: element by element; 12: the value
# copy's tail past the last 8 columns.
@pytest.mark.parametrize("dim", [16, 24, 12])
def test_rope_write_matches_rotate_half_and_writes_only_its_columns(dtype: torch.dtype, dim: int) -> None:
    torch.manual_seed(4)
    heads, kv, max_positions, rows_total = 6, 2, 40, 5
    count = 7
    qkv = torch.randn(count, (heads + 2 * kv) * dim, dtype=dtype)
    cos, sin = torch.randn(max_positions, dim, dtype=dtype), torch.randn(max_positions, dim, dtype=dtype)
    positions = torch.tensor([0, 39, 5, 6, 7, 12, 3])
    rows = torch.tensor([4, 0, 2, 2, 2, 1, 3])
    keys = torch.full((rows_total, kv, max_positions, dim), 7.0, dtype=dtype)
    values = keys.clone()
    q = KERNEL.rope_write(qkv, cos, sin, positions, rows, keys, values, heads)
    split = qkv.view(count, heads + 2 * kv, dim)
    x, c, s = split[:, : heads + kv], cos[positions][:, None], sin[positions][:, None]
    rotated = x * c + torch.cat((-x[..., dim // 2 :], x[..., : dim // 2]), dim=-1) * s
    assert torch.equal(q, rotated[:, :heads].flatten(1))  # the same ops and roundings: equal bits
    want_keys, want_values = torch.full_like(keys, 7.0), torch.full_like(values, 7.0)
    for t in range(count):
        want_keys[rows[t], :, positions[t]] = rotated[t, heads:]
        want_values[rows[t], :, positions[t]] = split[t, heads + kv :]
    assert torch.equal(keys, want_keys) and torch.equal(values, want_values)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rms_norm_equals_its_formula_bit_for_bit(dtype: torch.dtype) -> None:
    """Where the sum of squares is exact in any order (small multiples of 1/2), the kernel's
    output is fixed to the bit: fp32 ``inv = 1 / sqrt(sum / h + eps)``, then ``dtype(x * inv)``
    and ``w * that``, each rounded to the dtype; both the eight-lane loop and the tail (100 = 12 x 8
    + 4 columns) must give it."""
    torch.manual_seed(8)
    hidden, eps = 100, 1e-5
    x = (torch.randint(-4, 5, (5, hidden)) / 2).to(dtype)
    weight = torch.randn(hidden, dtype=dtype)
    h = x.float()
    # Each step one IEEE float32 operation (numpy's), as in C; torch's scalar division need not be.
    sums = h.pow(2).sum(-1, keepdim=True).numpy()
    inv = torch.from_numpy(np.float32(1) / np.sqrt(sums / np.float32(hidden) + np.float32(eps)))
    want = weight * (h * inv).to(dtype)
    got = KERNEL.add_rms_norm(x.clone(), None, weight, eps)
    assert torch.equal(got, want)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_vector_loop_and_tail_agree_bit_for_bit(dtype: torch.dtype) -> None:
    """The same gate and up values through the eight-lane loop (64 columns) and through the tail
    alone (7 columns) give the same bits, NaN included (bf16: one quiet NaN, 0x7fc0, in both)."""
    torch.manual_seed(9)
    gate, up = torch.randn(6, 64, dtype=dtype) * 6, torch.randn(6, 64, dtype=dtype)
    gate[0, 2], up[1, 3] = float("nan"), float("inf")
    vector = KERNEL.silu_mul(torch.cat([gate, up], dim=1))
    tail = KERNEL.silu_mul(torch.cat([gate[:, :7], up[:, :7]], dim=1))
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    assert torch.equal(vector[:, :7].view(bits), tail.view(bits))
    assert torch.isnan(vector).sum() == 1 and torch.isnan(vector[0, 2])
    if dtype == torch.bfloat16:
        assert int(vector[0, 2].view(torch.int16)) == 0x7FC0


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inter", [64, 13])  # 13: the tail past the last 8 columns
def test_silu_mul_matches_torch(dtype: torch.dtype, inter: int) -> None:
    torch.manual_seed(5)
    gate_up = torch.randn(9, 2 * inter, dtype=dtype) * 6
    gate_up[0, 0], gate_up[0, 1] = -200.0, 200.0  # exp's argument past its clamp on either side
    gate, up = gate_up.chunk(2, dim=-1)
    want = F.silu(gate) * up
    got = KERNEL.silu_mul(gate_up)
    tolerance = {"atol": 1e-6, "rtol": 2e-6} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 8e-3}
    torch.testing.assert_close(got, want, **tolerance)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_delta", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("hidden", [96, 100])  # 100: the tail past the last 8 columns
def test_add_layer_norm_matches_torch_layer_norm(dtype: torch.dtype, with_delta: bool, with_bias: bool,
                                                 hidden: int) -> None:
    torch.manual_seed(13)
    x, delta = torch.randn(37, hidden, dtype=dtype) + 3, torch.randn(37, hidden, dtype=dtype)
    weight, bias = torch.randn(hidden, dtype=dtype), torch.randn(hidden, dtype=dtype)
    eps = 1e-5
    want_x = x + delta if with_delta else x.clone()
    want = F.layer_norm(want_x, (hidden,), weight, bias if with_bias else None, eps)
    got = KERNEL.add_layer_norm(x, delta if with_delta else None, weight, bias if with_bias else None, eps)
    assert torch.equal(x, want_x)  # the residual add: in place, the same rounding as torch's add
    # Mean and variance may be summed in another order: last bits in fp32, before one rounding to bf16.
    tolerance = {"atol": 2e-6, "rtol": 2e-6} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 8e-3}
    torch.testing.assert_close(got, want, **tolerance)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu_erf", "relu"])
@pytest.mark.parametrize("width", [64, 13])  # 13: the tail past the last 8 columns
def test_activate_matches_torch(dtype: torch.dtype, activation: str, width: int) -> None:
    """In place, within the approximation of tanh (by exp) and erf (Abramowitz and Stegun 7.1.26,
    absolute error below 1.5e-7) of torch's own; ReLU exactly. Arguments past exp's clamp on
    either side; NaN stays NaN; +inf gives +inf (torch's vectorized GELU gives NaN there)."""
    torch.manual_seed(14)
    x = torch.randn(9, width, dtype=dtype) * 4
    x[0, 0], x[0, 1], x[1, 2], x[2, 3] = -200.0, 200.0, float("nan"), float("inf")
    reference = {"gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "gelu_erf": F.gelu, "relu": F.relu}
    want = reference[activation](x)
    got = x.clone()
    assert KERNEL.activate(got, activation) is got
    assert torch.isnan(got[1, 2]) and got[2, 3] == float("inf")
    finite = torch.isfinite(x)
    assert torch.isfinite(got[finite]).all()
    if activation == "relu":
        assert torch.equal(got[finite], want[finite])
        return
    tolerance = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 8e-3}
    torch.testing.assert_close(got[finite], want[finite], **tolerance)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_into_is_torchs_add_bit_for_bit(dtype: torch.dtype) -> None:
    torch.manual_seed(15)
    y, x = torch.randn(5, 67, dtype=dtype), torch.randn(5, 67, dtype=dtype)  # 335 = 41 x 8 + 7: the tail
    want = y + x
    assert KERNEL.add_into(y, x) is y
    assert torch.equal(y, want)


@needs_kernel
def test_the_layer_shape_kernels_refuse_inputs_outside_their_contract() -> None:
    x, w = torch.randn(4, 16), torch.randn(16)
    for args in [(x, None, w, torch.randn(15)), (x, None, w, w.bfloat16()), (x, None, w, torch.randn(16, 1)),
                 (x.t(), None, torch.randn(4), None), (x, torch.randn(4, 8), w, None)]:
        with pytest.raises(KernelContractError):
            KERNEL.add_layer_norm(*args, 1e-5)
    with pytest.raises(KernelContractError, match="unknown activation 'silu'"):
        KERNEL.activate(torch.randn(2, 8), "silu")  # the gated MLP's: silu_mul
    with pytest.raises(KernelContractError):
        KERNEL.activate(torch.randn(8, 2).t(), "relu")
    for a, b in [(torch.randn(4, 8), torch.randn(4, 7)), (torch.randn(4, 8), torch.randn(4, 8).bfloat16()),
                 (torch.randn(8, 4).t(), torch.randn(4, 8))]:
        with pytest.raises(KernelContractError):
            KERNEL.add_into(a, b)


def test_a_refused_step_changes_no_row(tiny_model_factory) -> None:
    """A step whose prompt is refused (a token id past the vocabulary) raises before either part
    touches a row: the running slot then decodes exactly as on a twin that never saw the call,
    and the refused slot can still be prefilled."""
    folder = tiny_model_factory("llama")
    backend, twin = (PyTorchBackend.load(folder, max_slots=3) for _ in range(2))
    for b in (backend, twin):
        b.prefill([0], [[3, 1, 4, 1, 5]])
    with pytest.raises(ValueError, match=r"prompts\[0\] holds token ids outside"):
        backend.decode_and_prefill([0], [9], [5], [1], [[2, 10**9]])
    got, want = backend.decode([0], [9], [5]), twin.decode([0], [9], [5])
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(backend.prefill([1], [[2, 6]]), twin.prefill([1], [[2, 6]]), atol=0, rtol=0)


# -- the build: a broken source fails the tests; the sanitizer build catches an over-read --

def test_a_broken_source_fails_the_kernel_tests_on_a_host_that_builds_them(tmp_path) -> None:
    """A source that does not compile fails the build with the compiler's message, and on a
    host that should build the kernels the kernel tests then fail rather than skip."""
    broken = tmp_path / "cpu_kernels.c"
    broken.write_text(cpu_kernels.SOURCE.read_text().replace("static inline float hsum8", "static inline flot hsum8"))
    with pytest.raises(RuntimeError, match="failed"):
        cpu_kernels.build(tmp_path / "out", source=broken)
    with pytest.raises(pytest.fail.Exception, match="should build the CPU kernels"):
        kernel_or_fail(None, "could not build", None)
    with pytest.raises(pytest.skip.Exception):
        kernel_or_fail(None, "no AVX2", "this CPU lacks avx2")


def test_host_refusal_is_none_where_the_cpu_and_a_compiler_allow() -> None:
    flags = set(cpu_kernels.cpu_flags())
    capable = (sys.platform == "linux" and os.uname().machine == "x86_64" and {"avx2", "fma"} <= flags
               and cpu_kernels._compiler() is not None)
    assert (HOST_REFUSAL is None) == capable, HOST_REFUSAL


# The SiLU tail (13 = 8 + 5 columns) fills its eight-lane buffer of up values without the bound:
# three 4-byte reads past the row's end, whose values the plain build never uses.
PLANTED_OVERREAD = ("u[e] = e < m ? load1(gate_up, in0 + inter + inter8 + e, bf16) : 0.f;",
                    "u[e] = load1(gate_up, in0 + inter + inter8 + e, bf16);")
_CALL_SILU = """
import ctypes, sys, torch
from pathlib import Path
from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels
kernel = CpuKernels(ctypes.CDLL(sys.argv[1]), Path(sys.argv[1]))
out = kernel.silu_mul(torch.randn(1, 26))  # one row, allocated to its exact size
print("finite", bool(torch.isfinite(out).all()))
"""


def test_the_sanitizer_build_catches_a_planted_over_read(kernel, tmp_path) -> None:
    """The same call on the sanitized build of the real source runs clean; on a source with the
    over-read planted it aborts with AddressSanitizer's report of the read. The plain
    (-O3) build of the planted source passes every value check: only the sanitizer sees it."""
    asan = subprocess.run([cpu_kernels._compiler(), "-print-file-name=libasan.so"], capture_output=True,
                          text=True).stdout.strip()
    assert Path(asan).exists(), f"no ASan runtime for {cpu_kernels._compiler()}: {asan!r}"
    source = cpu_kernels.SOURCE.read_text()
    assert source.count(PLANTED_OVERREAD[0]) == 1, "the SiLU tail changed: move the planted over-read"
    planted = tmp_path / "planted" / "cpu_kernels.c"
    planted.parent.mkdir()
    planted.write_text(source.replace(*PLANTED_OVERREAD))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {
        "LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0"}

    def run(library: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _CALL_SILU, str(library)], capture_output=True, text=True,
                              env=env, timeout=300)

    clean = run(cpu_kernels.build(tmp_path / "real", cpu_kernels.SANITIZE_FLAGS)[0])
    assert clean.returncode == 0 and "finite True" in clean.stdout, clean.stderr[-2000:]
    caught = run(cpu_kernels.build(tmp_path / "bad", cpu_kernels.SANITIZE_FLAGS, source=planted)[0])
    # The tail's reads run past the allocation's end: ASan reports a heap-buffer-overflow (or
    # "unknown-crash"), a READ, in the SiLU kernel.
    report = caught.stderr
    assert caught.returncode != 0 and "ERROR: AddressSanitizer" in report, (caught.returncode, report[-2000:])
    assert "READ of size" in report and "in silu_mul" in report, report[-2000:]
    unsanitized = run(cpu_kernels.build(tmp_path / "plain", source=planted)[0])
    assert unsanitized.returncode == 0 and "finite True" in unsanitized.stdout, unsanitized.stderr[-2000:]


# -- the kernels bound to one model's cache: the contract checked at bind, per step, per call --

def _bound_inputs(dtype: torch.dtype = torch.float32) -> dict:
    layers, rows_total, kv, positions, d = 2, 3, 2, 10, 16
    return {"keys": torch.randn(layers, rows_total, kv, positions, d, dtype=dtype),
            "values": torch.randn(layers, rows_total, kv, positions, d, dtype=dtype),
            "cos": torch.randn(positions, d, dtype=dtype), "sin": torch.randn(positions, d, dtype=dtype), "heads": 4}


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_bound_kernels_compute_what_the_checked_calls_compute(dtype: torch.dtype) -> None:
    torch.manual_seed(31)
    bound_in, plain_in = _bound_inputs(dtype), None
    plain_in = {k: v.clone() if torch.is_tensor(v) else v for k, v in bound_in.items()}
    bound = KERNEL.bind(**bound_in)
    positions, rows = torch.tensor([3, 0, 9]), torch.tensor([2, 0, 1])
    step = bound.step(positions, rows)
    qkv = torch.randn(3, (4 + 2 * 2) * 16, dtype=dtype)
    for layer in (0, 1):
        q_bound = step.rope_write(layer, qkv)
        q_plain = KERNEL.rope_write(qkv, plain_in["cos"], plain_in["sin"], positions, rows, plain_in["keys"][layer],
                                    plain_in["values"][layer], 4)
        assert torch.equal(q_bound, q_plain)
        assert torch.equal(bound_in["keys"], plain_in["keys"]) and torch.equal(bound_in["values"], plain_in["values"])
        got = step.attention(layer, q_bound, 0.25)
        want = KERNEL.decode_attention(q_plain, plain_in["keys"][layer], plain_in["values"][layer], rows, positions + 1,
                                       0.25)
        assert torch.equal(got, want)


@needs_kernel
def test_binding_refuses_a_cache_or_tables_outside_the_contract() -> None:
    for change in [{"keys": _bound_inputs()["keys"][0]},  # 4-D: one layer, not the cache
                   {"values": _bound_inputs()["values"].transpose(3, 4)},
                   {"values": _bound_inputs()["values"][:, :2]}, {"cos": torch.randn(10, 8)},
                   {"sin": torch.randn(9, 16)}, {"heads": 3}, {"heads": 130},
                   {"keys": _bound_inputs()["keys"].half(), "values": _bound_inputs()["values"].half()}]:
        with pytest.raises(KernelContractError):
            KERNEL.bind(**(_bound_inputs() | change))


@needs_kernel
def test_a_bound_step_refuses_indices_and_activations_outside_the_contract() -> None:
    inputs = _bound_inputs()
    bound = KERNEL.bind(**inputs)
    for positions, rows in [(torch.tensor([1, 2], dtype=torch.int32), torch.tensor([0, 1])),
                            (torch.tensor([1, 2]), torch.tensor([0])), (torch.tensor(1), torch.tensor(0))]:
        with pytest.raises(KernelContractError):
            bound.step(positions, rows)
    keys_before = inputs["keys"].clone()
    for positions, rows in [(torch.tensor([1, 10]), torch.tensor([0, 1])), (torch.tensor([0, 1]), torch.tensor([0, 3])),
                            (torch.tensor([-1, 1]), torch.tensor([0, 1]))]:
        step = bound.step(positions, rows)  # values are checked in C, on every call
        with pytest.raises(KernelContractError):
            step.rope_write(0, torch.randn(2, 128))
        with pytest.raises(KernelContractError):
            step.attention(0, torch.randn(2, 64), 0.25)
    assert torch.equal(inputs["keys"], keys_before)
    step = bound.step(torch.tensor([0, 1]), torch.tensor([0, 1]))
    for layer, qkv in [(2, torch.randn(2, 128)), (-1, torch.randn(2, 128)), (0, torch.randn(3, 128)),
                       (0, torch.randn(2, 120)), (0, torch.randn(2, 128).bfloat16()), (0, torch.randn(2, 256)[:, ::2])]:
        with pytest.raises(KernelContractError):
            step.rope_write(layer, qkv)
    for layer, q in [(2, torch.randn(2, 64)), (0, torch.randn(2, 72)), (0, torch.randn(1, 64).expand(2, -1)),
                     (0, torch.randn(2, 128)[:, ::2])]:
        with pytest.raises(KernelContractError):
            step.attention(layer, q, 0.25)
    assert torch.equal(inputs["keys"], keys_before)
