"""Continuous batching changes nothing: Engine + backend == ``transformers`` ``generate`` alone.

Requests with different prompt lengths join at different steps, more of them than
there are slots; each one's greedy tokens must equal, token for token, what
``model.generate(do_sample=False)`` produces for its prompt alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.engine import Engine, SamplingParams
from tests.engine.reference_backend import ReferenceBackend
from tests.models import ARCHS
from tests.staggered import generate_alone, run_staggered

PROMPTS = [
    "The quick brown fox",
    "Paris is the capital of France. Berlin is",
    "Hello",
    "def f(x):\n    return x * 2  # code, numbers 0123456789 and more code",
    "日本語のテキスト",
]
ARRIVALS = (0, 0, 2, 3, 7)  # the step at which each prompt is added


def check_equivalence(model_dir: Path, backend, max_new_tokens: int, prompts: list[list[int]]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    engine = Engine(backend, tokenizer)
    got = run_staggered(engine, prompts, SamplingParams(max_new_tokens=max_new_tokens), ARRIVALS)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    expected = [generate_alone(model, p, max_new_tokens) for p in prompts]
    assert got == expected
    assert max(len(t) for t in got) == max_new_tokens  # not everything stopped at once on EOS


@pytest.mark.parametrize("arch", ARCHS)
def test_pytorch_backend_matches_generate(tiny_model_factory, arch: str) -> None:
    model_dir = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    backend = PyTorchBackend.load(model_dir, max_slots=3, n_positions=128)
    check_equivalence(model_dir, backend, 20, prompts)


def test_reference_backend_matches_generate(tiny_llama: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    check_equivalence(tiny_llama, ReferenceBackend(tiny_llama, max_slots=3), 12, prompts)


def test_smollm2_chat_matches_generate(smollm2_dir: Path) -> None:
    from djl_python.api.chat import render_chat

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    questions = ["What is the capital of France?", "Write a haiku about the sea.", "2+2=?"]
    prompts = [tokenizer.encode(render_chat(tokenizer, [{"role": "user", "content": q}])) for q in questions]
    backend = PyTorchBackend.load(smollm2_dir, max_slots=2, n_positions=256)
    check_equivalence(smollm2_dir, backend, 12, prompts)


def test_repetition_penalty_matches_generate(tiny_llama: Path) -> None:
    """HF semantics: the penalty covers prompt and generated tokens, greedy rows included."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=2, n_positions=128), tokenizer)
    prompts = [tokenizer.encode(p) for p in PROMPTS[:3]]
    got = run_staggered(engine, prompts, SamplingParams(max_new_tokens=16, repetition_penalty=1.8), ARRIVALS[:3])
    expected = [generate_alone(model, p, 16, repetition_penalty=1.8) for p in prompts]
    assert got == expected
    assert got != run_staggered(engine, prompts, SamplingParams(max_new_tokens=16), ARRIVALS[:3])  # the penalty changed something
