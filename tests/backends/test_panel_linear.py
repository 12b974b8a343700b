"""The panel matmul (``native/gemm.c`` through ``native/panel_linear.py``).

The reference is the same product in float64 on the same (float32 or bfloat16) inputs: what
the kernel must compute up to its fp32 summation. Shapes cover every tile size of a call
(1 to 8 rows, and the splits of 9 to 40 rows), a last panel narrower than 32 columns, odd
and short input widths, biases, and rows that are not packed one after another.

Every test runs on this host's build and, where this host has AVX-512, on the build without it
(``avx2_build``: the 8-wide float32 kernel an AVX2-only CPU runs), which must also compute the
host build's bits. Where a build has no matmul for a dtype (bfloat16 needs AVX512-BF16) the
dtype's tests skip, and the backend keeps oneDNN there (``test_native_linear``). ``make test``
also runs this module on the AddressSanitizer + UBSan build (``scripts/sanitized-kernels.sh``).
"""

from __future__ import annotations

import pytest
import torch

from djl_python.backends.pytorch.native import panel_linear
from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels, KernelContractError
from tests.backends.test_cpu_kernels import (HOST_REFUSAL, HOW, KERNEL, avx2_build, each_build,  # noqa: F401
                                             kernel_or_fail)

DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture
def kernels(each_build: CpuKernels) -> CpuKernels:
    return each_build


@pytest.fixture(params=DTYPES, ids=["fp32", "bf16"])
def dtype(request, kernels: CpuKernels) -> torch.dtype:
    if request.param not in kernels.gemm_panel:
        pytest.skip(f"no panel matmul for {request.param} in this build (bfloat16 needs AVX512-BF16); the "
                    "backend packs for oneDNN there")
    return request.param


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ weight.double().T
    return out if bias is None else out + bias.double()


def _tolerance(dtype: torch.dtype, k: int) -> dict[str, float]:
    # fp32: a k-term sum in fp32; bf16: that, then one rounding to bf16 (2^-8 relative).
    return dict(rtol=1e-5 * k ** 0.5, atol=1e-5 * k ** 0.5) if dtype == torch.float32 else dict(rtol=2 ** -8, atol=1e-3)


@pytest.mark.parametrize("rows", [0, 1, 2, 5, 7, 8, 9, 13, 16, 17, 40])
@pytest.mark.parametrize("n,k", [(1, 2), (16, 4), (31, 8), (32, 64), (33, 30), (47, 12), (48, 6), (100, 96)])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_the_float64_product(kernels, dtype, rows, n, k, bias) -> None:
    torch.manual_seed(rows * 1000 + n * 10 + k)
    weight = torch.randn(n, k).to(dtype)
    x = torch.randn(rows, k).to(dtype)
    b = torch.randn(n).to(dtype) if bias else None
    packed = panel_linear.pack(weight, kernels)
    assert (packed.out_features, packed.in_features, packed.dtype) == (n, k, dtype)
    got = packed(x, b)
    assert got.shape == (rows, n) and got.dtype == dtype
    torch.testing.assert_close(got.double(), _reference(x, weight, b), **_tolerance(dtype, k))


@pytest.mark.parametrize("rows", [5, 13])
@pytest.mark.parametrize("n", [8, 9, 16, 17, 31, 33, 48])
def test_writes_stay_inside_the_output(kernels, dtype, n, rows) -> None:
    """The C function called directly, into rows wider than the output (ldy = n + 32) filled with a
    sentinel, and a guard row after them: only columns < n of rows < m change (5 and 13 rows: the
    AVX2 build's two kinds of tile). The sanitizer build does not see masked stores, so this is
    what holds the tail masks to the contract."""
    torch.manual_seed(n)
    k = 8
    weight, x, b = torch.randn(n, k).to(dtype), torch.randn(rows, k).to(dtype), torch.randn(n).to(dtype)
    packed = panel_linear.pack(weight, kernels)
    sentinel = -12345.0
    y = torch.full((rows + 1, n + 32), sentinel).to(dtype)  # the last row is the guard
    kernels.gemm_function(dtype)(x.data_ptr(), k, packed.panels.data_ptr(), b.data_ptr(), y.data_ptr(), n + 32, rows,
                                 n, k, torch.get_num_threads())
    assert (y[:rows, n:] == sentinel).all() and (y[rows] == sentinel).all()
    assert torch.equal(y[:rows, :n], packed(x, b))


def test_bf16_output_rounds_to_nearest_even(kernels) -> None:
    """k = 2 and W = [[1, 1]]: the output is x0 + x1 summed in fp32 (exactly, for these inputs)
    and rounded once to bf16, ties to even, as torch rounds it."""
    if torch.bfloat16 not in kernels.gemm_panel:
        pytest.skip("no bf16 panel matmul on this CPU (AVX512-BF16)")
    one = torch.ones(1, 2, dtype=torch.bfloat16)
    packed = panel_linear.pack(one, kernels)
    ties = torch.tensor([[1.0, 2.0 ** -8], [1.0 + 2.0 ** -7, 2.0 ** -8], [-3.0, -2.0 ** -7]])
    torch.manual_seed(2)
    x = torch.cat([ties, torch.randn(61, 2)]).bfloat16()
    want = (x[:, :1].float() + x[:, 1:].float()).bfloat16()
    assert torch.equal(packed(x, None), want)
    assert packed(x[:1], None).item() == 1.0 and packed(x[1:2], None).item() == 1.0 + 2.0 ** -6


def test_odd_width_in_fp32_and_strided_rows(kernels, dtype) -> None:
    """Rows of a wider tensor (row stride > width) are read in place; a column-strided view is
    copied first; both give the same bits as the contiguous rows."""
    torch.manual_seed(3)
    k = 7 if dtype == torch.float32 else 10
    weight = torch.randn(45, k).to(dtype)
    wide = torch.randn(14, k + 5).to(dtype)
    rows = wide[:, 2 : 2 + k]
    packed = panel_linear.pack(weight, kernels)
    got = packed(rows, None)
    assert torch.equal(got, packed(rows.contiguous(), None))
    assert torch.equal(packed(rows.t().contiguous().t(), None), got)
    torch.testing.assert_close(got.double(), _reference(rows, weight, None), **_tolerance(dtype, k))


def test_a_row_is_the_same_bits_in_any_batch(kernels, dtype) -> None:
    """The invariant of panel_linear's docstring: one row's output does not depend on the rows
    beside it (tile sizes change with the row count) or on the thread count."""
    torch.manual_seed(11)
    weight = torch.randn(200, 576).to(dtype)
    b = torch.randn(200).to(dtype)
    x = torch.randn(37, 576).to(dtype)
    packed = panel_linear.pack(weight, kernels)
    whole = packed(x, b)
    alone = torch.cat([packed(x[i : i + 1], b) for i in range(x.shape[0])])
    assert torch.equal(whole, alone)
    for count in (2, 13, 25):
        assert torch.equal(packed(x[5 : 5 + count], b), whole[5 : 5 + count])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(packed(x, b), whole)
    finally:
        torch.set_num_threads(threads)


def test_nan_stays_in_its_row(kernels, dtype) -> None:
    torch.manual_seed(5)
    weight = torch.randn(40, 16).to(dtype)
    x = torch.randn(3, 16).to(dtype)
    x[1, 4] = float("nan")
    got = panel_linear.pack(weight, kernels)(x, None)
    assert torch.isnan(got[1]).all()
    assert not torch.isnan(got[0]).any() and not torch.isnan(got[2]).any()


def test_contract_is_checked_before_the_kernel_runs(kernels, dtype) -> None:
    weight = torch.randn(40, 16).to(dtype)
    packed = panel_linear.pack(weight, kernels)
    other = torch.float64
    with pytest.raises(KernelContractError, match="x must be"):
        packed(torch.randn(2, 16, dtype=other), None)
    with pytest.raises(KernelContractError, match="16"):
        packed(torch.randn(2, 18).to(dtype), None)
    with pytest.raises(KernelContractError, match="x must be"):
        packed(torch.randn(16).to(dtype), None)
    with pytest.raises(KernelContractError, match="bias"):
        packed(torch.randn(2, 16).to(dtype), torch.randn(39).to(dtype))
    with pytest.raises(KernelContractError, match="bias"):
        packed(torch.randn(2, 16).to(dtype), torch.randn(40, dtype=other))


def test_what_cannot_be_packed_is_refused(kernels) -> None:
    assert panel_linear.refusal(None, torch.zeros(4, 4)) == "no CPU kernels"
    assert "2-dimensional" in panel_linear.refusal(kernels, torch.zeros(4))
    assert "float64" in panel_linear.refusal(kernels, torch.zeros(4, 4, dtype=torch.float64))
    if torch.bfloat16 in kernels.gemm_panel:
        assert "odd" in panel_linear.refusal(kernels, torch.zeros(4, 5, dtype=torch.bfloat16))
    with pytest.raises(KernelContractError, match="cannot pack"):
        panel_linear.pack(torch.zeros(4, 4, dtype=torch.float64), kernels)


def test_the_avx2_build_computes_the_host_builds_bits(avx2_build: CpuKernels) -> None:
    """float32 on 8-wide registers (an AVX2-only CPU's kernel: whole-panel tiles of up to 3 rows
    for calls of up to 8 rows, half-panel tiles of up to 6 beyond) sums each output in the AVX-512
    kernel's order, so it gives the same bits, over every tile size of both kernels, groups of 8
    columns with no, some and all real columns, biases and rows read in place."""
    host = kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)
    assert avx2_build.gemm_panel == {torch.float32: 32}  # no AVX512-BF16 without AVX-512
    assert avx2_build.vector_bits == 256 and host.vector_bits == 512
    torch.manual_seed(17)
    for n, k in ((5, 3), (9, 12), (16, 40), (24, 9), (31, 20), (33, 64), (47, 16), (70, 31), (96, 128)):
        weight, b = torch.randn(n, k), torch.randn(n)
        ours, theirs = panel_linear.pack(weight, avx2_build), panel_linear.pack(weight, host)
        assert torch.equal(ours.panels, theirs.panels)  # one layout for both
        wide = torch.randn(41, k + 3)
        for rows in (1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 19, 41):
            x = wide[:rows, 1 : 1 + k]
            for bias in (None, b):
                got, want = ours(x, bias), theirs(x, bias)
                assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (n, k, rows, bias is None)
