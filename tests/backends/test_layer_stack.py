"""The layer stack (``native/layer_stack.py``, ``layer_stack.c``): a step's decoder layers in one C call.

The reference is the native forward's own Python layer loop over the same kernels: the stack
must compute the same bits, not merely close values, in every kind of step the engine makes
(prompts, decode rows, both in one step, a prompt continued from a cached prefix or earlier
chunks, speculative verification), with and without biases, for several head groupings and
widths that leave tails, on this host's build of the kernels and, where this host has AVX-512,
on the build without it (an AVX2-only CPU's). Where a build has no panel matmul for a dtype
(bfloat16 needs AVX512-BF16) the stack does not run and that dtype's tests skip;
:func:`test_the_stack_runs_only_where_every_weight_is_in_panels` holds the refusal.

``make test`` also runs this module on the AddressSanitizer + UBSan build of the kernels
(``scripts/sanitized-kernels.sh``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from djl_python.backends.pytorch import backend as pytorch_backend
from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.backends.pytorch.native.cpu_kernels import CpuKernels, KernelContractError
from djl_python.backends.pytorch.native.layer_stack import LayerStack
from djl_python.backends.pytorch.native.decoder import DecodeRows, NativeDecoder
from djl_python.engine import Engine
from tests.backends.test_cpu_kernels import (HOST_REFUSAL, HOW, KERNEL, SANITIZED, avx2_build,  # noqa: F401
                                             each_build, kernel_or_fail)
from tests.engine.test_chunked_prefill import staggered
from tests.models import ARCHS

ROWS, POSITIONS = 6, 64
# (heads, kv heads, head_dim, hidden, intermediate, biases): groups of 2, 3 and 1 query heads per KV
# head; widths that leave the kernels' tails (an intermediate not a multiple of 8, a last panel
# narrower than 32); heads * head_dim wider than hidden (an explicit head_dim, as Mistral-Nemo's).
SHAPES = [(4, 2, 16, 64, 128, False), (6, 2, 8, 48, 100, True), (2, 2, 16, 32, 72, False),
          (4, 2, 16, 48, 96, True)]
SHAPE_IDS = ["group2", "group3-bias-tails", "group1", "q-wider-than-hidden"]
# The other layer shapes the stack runs (native/architectures.py), as (model_type, config): LayerNorm
# with biases, GELU (erf, tanh) and ReLU MLPs, the parallel and shared-norm residuals, partial rotary
# by halves (gpt_neox) and by pairs (gptj), learned positions, one K/V head, a QKV stored per head,
# ALiBi and a norm of the embedding (bloom).
_SMALL = {"vocab_size": 300, "tie_word_embeddings": False}
ARCH_SHAPES = {
    "gpt_neox-parallel": ("gpt_neox", dict(hidden_size=48, num_attention_heads=3, intermediate_size=100,
                                           num_hidden_layers=3, max_position_embeddings=POSITIONS)),
    "gpt_neox-sequential": ("gpt_neox", dict(hidden_size=64, num_attention_heads=4, intermediate_size=96,
                                             num_hidden_layers=3, max_position_embeddings=POSITIONS,
                                             use_parallel_residual=False)),
    "gptj-shared-norm": ("gptj", dict(n_embd=64, n_head=4, rotary_dim=8, n_inner=100, n_layer=3, n_positions=POSITIONS)),
    "gpt2": ("gpt2", dict(n_embd=64, n_head=4, n_inner=72, n_layer=3, n_positions=POSITIONS)),
    "gpt_bigcode-multi-query": ("gpt_bigcode", dict(n_embd=64, n_head=4, n_inner=72, n_layer=3,
                                                    n_positions=POSITIONS)),
    "gpt_bigcode-per-head": ("gpt_bigcode", dict(n_embd=64, n_head=4, n_inner=72, n_layer=3, n_positions=POSITIONS,
                                                 multi_query=False)),
    "opt-relu": ("opt", dict(hidden_size=64, num_attention_heads=4, ffn_dim=100, num_hidden_layers=3,
                             max_position_embeddings=POSITIONS, word_embed_proj_dim=64)),
    "bloom-alibi": ("bloom", dict(hidden_size=48, n_head=3, n_layer=3)),
}


@pytest.fixture(autouse=True)
def _backend_uses_the_build_under_test(monkeypatch) -> None:
    if SANITIZED:
        monkeypatch.setattr(pytorch_backend, "load_cpu_kernels", lambda: (KERNEL, HOW))


@pytest.fixture
def build(each_build: CpuKernels) -> CpuKernels:
    return each_build


def _panel_dtype(dtype: torch.dtype, kernels: CpuKernels | None = None) -> None:
    kernels = kernels or kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)
    if dtype not in kernels.gemm_panel:
        pytest.skip(f"no panel matmul for {dtype} in this build (bfloat16 needs AVX512-BF16): the layer stack "
                    "does not run there")


def _twins(shape: tuple | str, dtype: torch.dtype, kernels: CpuKernels | None = None
           ) -> tuple[NativeDecoder, NativeDecoder]:
    """Two native forwards of one random model, one on the stack and one on the Python loop:
    a llama of ``shape`` (:data:`SHAPES`) or one of :data:`ARCH_SHAPES` by name."""
    if isinstance(shape, str):
        model_type, kwargs = ARCH_SHAPES[shape]
        torch.manual_seed(len(shape))
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs, **_SMALL))
    else:
        heads, kv, head_dim, hidden, inter, bias = shape
        torch.manual_seed(heads * 100 + hidden)
        config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=3,
                             num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                             max_position_embeddings=POSITIONS, attention_bias=bias, mlp_bias=bias, **_SMALL)
        model = LlamaForCausalLM(config)
    model = model.to(dtype).eval()
    # Random norm weights and biases: from_config makes them ones and zeros, which would hide a norm
    # swapped with another or a bias left out.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.dim() == 1 and ("norm" in name or "ln_" in name):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_()
    twin = copy.deepcopy(model)
    with torch.inference_mode():
        stacked = NativeDecoder.from_hf(model, ROWS, POSITIONS, kernels=kernels or KERNEL)
        looped = NativeDecoder.from_hf(twin, ROWS, POSITIONS, kernels=kernels or KERNEL, stack=False)
    assert stacked.stack == "one call" and stacked.layout == "panels"
    assert looped.stack == "python loop (stack=False)"
    return stacked, looped


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)


def _decode(rows: list[int], tokens: list[int], positions: list[int], width: int = POSITIONS) -> DecodeRows:
    first = rows[0] if rows == list(range(rows[0], rows[0] + len(rows))) else None
    as_tensor = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return DecodeRows(as_tensor(rows), first, as_tensor(tokens), as_tensor(positions), width)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [*SHAPES, *ARCH_SHAPES], ids=[*SHAPE_IDS, *ARCH_SHAPES])
def test_the_stack_computes_the_python_loops_bits(build: CpuKernels, dtype: torch.dtype, shape: tuple,
                                                  monkeypatch) -> None:
    """Every kind of step on both twins: the logits of each step and, at the end, every cache
    row, equal as integers; the stack ran once a step (and the loop twin never)."""
    _panel_dtype(dtype, build)
    stacked, looped = _twins(shape, dtype, build)
    runs = _count_runs(monkeypatch)
    a = [(i * 37 + 11) % 300 for i in range(23)]
    b = [(i * 53 + 5) % 300 for i in range(9)]
    c = [(i * 29 + 7) % 300 for i in range(30)]
    steps = [
        ((None, ([0, 2], [a[:19], b[:5]])), {}),  # prompts only
        ((_decode([0], [a[19]], [19]), ([1], [c[:11]])), {}),  # a decode row and a joining prompt
        ((_decode([0, 1, 2], [a[20], c[11], b[5]], [20, 11, 5]), None), {}),  # decode rows only
        ((None, ([2], [b])), {"starts": [6]}),  # a prompt continued from its row's first 6 columns
        ((_decode([0, 2], [a[21], 17], [21, 9]), ([3], [c])), {"starts": [0]}),
        ((None, ([1], [c[:16]])), {"starts": [12], "every_position": True}),  # verification of 4 tokens
    ]
    with torch.inference_mode():
        for (decode, prefill), kwargs in steps:
            got = stacked.step(decode, prefill, **kwargs)
            want = looped.step(decode, prefill, **kwargs)
            for part, expected in zip(got, want):
                assert (part is None) == (expected is None)
                if part is not None:
                    assert torch.equal(_bits(part), _bits(expected))
    assert runs == [stacked._stack] * len(steps)
    assert torch.equal(_bits(stacked.keys), _bits(looped.keys))
    assert torch.equal(_bits(stacked.values), _bits(looped.values))


def _count_runs(monkeypatch) -> list:
    """The stacks whose ``run`` was called, in order."""
    runs: list = []
    real = LayerStack.run
    monkeypatch.setattr(LayerStack, "run", lambda self, step, x: runs.append(self) or real(self, step, x))
    return runs


def test_use_stack_switches_between_steps_on_one_copy_of_the_weights(monkeypatch) -> None:
    """The benchmark's switch: the stack, the loop, the stack again on one model, each step the
    same bits as a loop-only twin's."""
    _panel_dtype(torch.float32)
    stacked, looped = _twins(SHAPES[0], torch.float32)
    runs = _count_runs(monkeypatch)
    prompts = [[(i * 31 + 3) % 300 for i in range(14)], [(i * 17 + 1) % 300 for i in range(6)]]
    with torch.inference_mode():
        for model in (stacked, looped):
            model.step(None, ([0, 1], prompts))
        for k, on in enumerate((True, False, True)):
            stacked.use_stack(on)
            decode = _decode([0, 1], [k + 1, k + 2], [14 + k, 6 + k])
            got, want = stacked.step(decode, None)[0], looped.step(decode, None)[0]
            assert torch.equal(_bits(got), _bits(want))
    assert runs == [stacked._stack] * 3  # the prefill, the first and third decodes (the second ran the loop)


def test_a_position_out_of_range_raises_before_anything_is_written() -> None:
    _panel_dtype(torch.float32)
    stacked, _ = _twins(SHAPES[0], torch.float32)
    keys, values = stacked.keys.clone(), stacked.values.clone()
    x = torch.randn(2, 64)
    for positions, rows in (([3, POSITIONS], [0, 1]), ([3, 4], [0, ROWS])):
        step = stacked._bound.step(torch.tensor(positions), torch.tensor(rows))
        with pytest.raises(KernelContractError, match="layer_stack: a position outside 0..63 or a row outside"):
            stacked._stack.run(step, x.clone())
    assert torch.equal(stacked.keys, keys) and torch.equal(stacked.values, values)


def test_the_stack_refuses_activations_outside_its_contract() -> None:
    _panel_dtype(torch.float32)
    stacked, looped = _twins(SHAPES[0], torch.float32)
    step = stacked._bound.step(torch.tensor([0, 1]), torch.tensor([0, 0]))
    for x in (torch.randn(2, 64).to(torch.bfloat16), torch.randn(3, 64), torch.randn(2, 65), torch.randn(64, 2).t()):
        with pytest.raises(KernelContractError, match=r"layer_stack: x must be a contiguous CPU \[2, 64\]"):
            stacked._stack.run(step, x)
    other = looped._bound.step(torch.tensor([0, 1]), torch.tensor([0, 0]))
    with pytest.raises(KernelContractError, match="another model's cache"):
        stacked._stack.run(other, torch.randn(2, 64))
    with pytest.raises(KernelContractError, match="layer_stack: 2 layers over a cache of 3"):
        LayerStack(KERNEL, stacked._bound, stacked.layers[:2], stacked.recipe, stacked.eps, stacked.scale)
    # No token (the loop's kernels each return at once): nothing to add, nothing written.
    keys = stacked.keys.clone()
    empty = stacked._bound.step(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    assert stacked._stack.run(empty, torch.empty(0, 64)).shape == (0, 64)
    assert torch.equal(stacked.keys, keys)


def test_the_stack_runs_only_where_every_weight_is_in_panels(tiny_llama: Path) -> None:
    """Unpacked weights, torch ops, or no panel matmul for the dtype: the Python loop, saying why."""
    kernels = kernel_or_fail(KERNEL, HOW, HOST_REFUSAL)
    with torch.inference_mode():
        unpacked = NativeDecoder.from_hf(LlamaForCausalLM.from_pretrained(str(tiny_llama)), 2, 32,
                                         prepack_weights=False, kernels=kernels)
        torch_ops = NativeDecoder.from_hf(LlamaForCausalLM.from_pretrained(str(tiny_llama)), 2, 32, kernels=None)
    assert unpacked.stack == "python loop (not every decoder weight is in the panel layout)"
    assert torch_ops.stack == "python loop (the attention and rope run on torch ops)"
    backend = PyTorchBackend.load(tiny_llama, max_slots=2)
    expected = "one call" if torch.float32 in kernels.gemm_panel else \
        "python loop (not every decoder weight is in the panel layout)"
    assert backend.info.extra["layer_stack"] == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_output_is_the_same_with_and_without_the_stack(tiny_model_factory, arch: str, build: CpuKernels,
                                                              monkeypatch) -> None:
    """Engines over the two forwards, with chunked prefill and the prefix cache on: the same
    tokens for every request of a staggered run (prompts joining running decodes), on this host's
    build and on the build without AVX-512."""
    kernels = build
    monkeypatch.setattr(pytorch_backend, "load_cpu_kernels", lambda: (kernels, "the build under test"))
    folder = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def engine(stack: bool) -> Engine:
        backend = PyTorchBackend.load(folder, max_slots=4, n_positions=256, prefix_cache_rows=2, layer_stack=stack)
        return Engine(backend, tokenizer, max_prefill_tokens=16, chunked_prefill=True)

    stacked, looped = engine(True), engine(False)
    if torch.float32 in kernels.gemm_panel:
        assert stacked.backend.info.extra["layer_stack"] == "one call"
        assert stacked.backend._forward.layers[0].qkv.function is kernels.gemm_function(torch.float32)
    assert looped.backend.info.extra["layer_stack"] == "python loop (stack=False)"
    for _ in range(2):  # the second round reuses cached prefixes
        assert staggered(stacked) == staggered(looped)
    assert stacked.prefix_cache.hit_tokens > 0
