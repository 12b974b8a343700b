"""Load-time defaults, dtype handling and input validation of the PyTorch backend."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from djl_python.backends import model_defaults as defaults
from djl_python.backends.pytorch.backend import PyTorchBackend
from tests.models import EOS_ID


@pytest.fixture(scope="module")
def llama_backend(tiny_llama) -> PyTorchBackend:
    return PyTorchBackend.load(tiny_llama, max_slots=3)


@pytest.fixture(scope="module")
def llama_reference(tiny_llama) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()


def test_default_limits_follow_the_model(llama_backend: PyTorchBackend) -> None:
    limits, info = llama_backend.limits, llama_backend.info
    assert limits.max_slots == 3
    assert limits.n_positions == 256  # the tiny model's max_position_embeddings
    assert limits.prefill_buckets == (128, 256)
    assert limits.vocab_size == 512
    assert limits.eos_token_ids == (EOS_ID,)
    assert (info.name, info.device, info.model_type, info.dtype) == ("pytorch", "cpu", "llama", "fp32")
    # 2 layers x K,V x 3 slots x 2 kv heads x 256 positions x 16 dims x 4 bytes
    assert info.extra["kv_cache_bytes"] == 2 * 2 * 3 * 2 * 256 * 16 * 4


def test_explicit_limits(tiny_llama) -> None:
    backend = PyTorchBackend.load(tiny_llama, max_slots=1, n_positions=100, prefill_buckets=[64, 32, 64])
    assert backend.limits.n_positions == 100
    assert backend.limits.prefill_buckets == (32, 64)
    with pytest.raises(ValueError, match="prompts\\[0\\] has 65 tokens"):
        backend.prefill([0], [[5] * 65])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_positions": 257}, "n_positions 257 exceeds"),
        ({"prefill_buckets": [128, 512]}, "exceed n_positions"),
        ({"dtype": "fp8"}, "dtype must be one of"),
        ({"attn_implementation": "flash_attention_2"}, "attn_implementation must be one of"),
        ({"max_slots": 0}, "max_slots must be >= 1"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_options_are_named(tiny_llama, kwargs: dict, message: str) -> None:
    options = {"max_slots": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        PyTorchBackend.load(tiny_llama, **options)


def test_default_n_positions_and_buckets(tiny_model_factory) -> None:
    bloom = AutoConfig.from_pretrained(tiny_model_factory("bloom"))
    assert defaults.resolve_n_positions(bloom, None) == 2048  # alibi: no position table
    assert defaults.resolve_buckets(2048, None) == (128, 256, 512, 1024, 2048)
    assert defaults.resolve_buckets(1000, None) == (128, 256, 512, 1000)
    assert defaults.resolve_buckets(64, None) == (64,)
    mistral = AutoConfig.from_pretrained(tiny_model_factory("mistral"))
    mistral.sliding_window = 128  # slot masks are plain causal, so a window caps the length
    assert defaults.resolve_n_positions(mistral, None) == 128
    with pytest.raises(ValueError, match="sliding window"):
        defaults.resolve_n_positions(mistral, 200)


def test_bf16_loads_and_decodes(tiny_llama) -> None:
    backend = PyTorchBackend.load(tiny_llama, max_slots=2, dtype="bf16")
    assert backend.info.dtype == "bf16" and backend.model.dtype == torch.bfloat16
    logits = backend.prefill([0, 1], [[5, 6, 7], [8, 9]])
    assert logits.dtype == torch.float32 and logits.shape == (2, 512)
    logits = backend.decode([0, 1], logits.argmax(-1).tolist(), [3, 2])
    assert logits.dtype == torch.float32 and logits.shape == (2, 512)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.prefill([0], [[]]), "prompts\\[0\\] has 0 tokens"),
        (lambda b: b.prefill([0], [[5, 512]]), "token ids outside"),
        (lambda b: b.prefill([1, 0], [[5], [6]]), "distinct and ascending"),
        (lambda b: b.prefill([3], [[5]]), "must lie in \\[0, 3\\)"),
        (lambda b: b.prefill([0, 1], [[5]]), "2 slot_ids but 1 prompts"),
        (lambda b: b.decode([0], [5, 6], [4]), "1 slot_ids, 2 last_tokens"),
        (lambda b: b.decode([2], [5], [4]), "never prefilled or already released"),
        (lambda b: b.decode([0], [-1], [4]), "token ids outside"),
        (lambda b: b.decode([0], [5], [256]), "positions must lie in"),
    ],
)
def test_bad_calls_raise_and_leave_other_rows_intact(
    llama_backend: PyTorchBackend, llama_reference: torch.nn.Module, call, message: str
) -> None:
    prompt = [11, 12, 13, 14]
    first = llama_backend.prefill([0], [prompt])[0]
    with pytest.raises(ValueError, match=message):
        call(llama_backend)
    token = int(first.argmax())
    after = llama_backend.decode([0], [token], [len(prompt)])[0]
    with torch.inference_mode():
        expected = llama_reference(torch.tensor([prompt + [token]])).logits[0, -1]
    torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)


def test_release_is_idempotent_and_blocks_decode(llama_backend: PyTorchBackend) -> None:
    llama_backend.prefill([1], [[5, 6]])
    llama_backend.release(1)
    llama_backend.release(1)
    with pytest.raises(ValueError, match="released"):
        llama_backend.decode([1], [7], [2])


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tiny_llama, monkeypatch, caplog) -> None:
    from djl_python.backends import model_defaults

    monkeypatch.setattr(model_defaults, "cpu_bf16_flags", lambda: ())
    with caplog.at_level("WARNING", logger="djl_python.backends.pytorch.backend"):
        PyTorchBackend.load(tiny_llama, max_slots=1, dtype="bf16")
    assert any("option.dtype=bf16" in r.getMessage() and "without bf16 instructions" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="djl_python.backends.pytorch.backend"):
        PyTorchBackend.load(tiny_llama, max_slots=1, dtype="fp32")
    assert not any("without bf16 instructions" in r.getMessage() for r in caplog.records)
