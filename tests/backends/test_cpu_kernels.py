"""The CPU kernels (``backends/native/cpu_kernels.py``, ``cpu_kernels.c``): decode attention and elementwise.

The reference is torch's ``scaled_dot_product_attention`` on each row's valid columns, run
row by row (no mask, no padding): what the kernel must compute. Where the kernel cannot be
built here (no compiler, no AVX2), the tests that need it skip and the fallback tests still
run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from djl_python.backends.base import Backend
from djl_python.backends.native import cpu_kernels
from djl_python.backends.pytorch import PyTorchBackend

KERNEL, HOW = cpu_kernels.load()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason=f"CPU kernels unavailable here: {HOW}")


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
@pytest.mark.parametrize(("kv", "group", "head_dim"), [(3, 3, 64), (2, 1, 32), (1, 8, 16), (4, 2, 24), (2, 4, 128)])
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


def test_refusal_names_what_the_kernel_lacks() -> None:
    if KERNEL is None:
        pytest.skip(HOW)
    cpu = torch.device("cpu")
    assert KERNEL.refusal(cpu, torch.float32, 3, 64) is None
    assert "float16" in KERNEL.refusal(cpu, torch.float16, 3, 64)
    assert "head_dim 12" in KERNEL.refusal(cpu, torch.float32, 3, 12)
    assert "9 query heads" in KERNEL.refusal(cpu, torch.float32, 9, 64)
    assert "cuda" in KERNEL.refusal(torch.device("cuda"), torch.float32, 3, 64)


@needs_kernel
def test_build_is_cached_per_folder(tmp_path) -> None:
    build = cpu_kernels.load.__wrapped__  # functools.cache would answer from memory
    kernel, how = build(tmp_path)
    assert kernel is not None and how.startswith("built ")
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].endswith(".so")  # no temporary left behind
    again, how_again = build(tmp_path)
    assert again is not None and how_again == how.replace("built ", "cached ", 1)


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
    if use_kernel and KERNEL is None:
        pytest.skip(HOW)
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
    forward.step = lambda decode, prefill: calls.append((decode, prefill)) or step(decode, prefill)
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

DTYPES = [torch.float32, torch.bfloat16]


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_delta", [False, True])
def test_add_rms_norm_matches_llama_rms_norm(dtype: torch.dtype, with_delta: bool) -> None:
    torch.manual_seed(3)
    x, delta, weight = torch.randn(37, 96, dtype=dtype), torch.randn(37, 96, dtype=dtype), torch.randn(96, dtype=dtype)
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
def test_rope_write_matches_rotate_half_and_writes_only_its_columns(dtype: torch.dtype) -> None:
    torch.manual_seed(4)
    heads, kv, dim, max_positions, rows_total = 6, 2, 16, 40, 5
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
