"""Through the TNX double, the engine's greedy tokens equal ``transformers`` ``generate`` alone.

More requests than slots, joining at different steps, so slots are released
and reused. The double recomputes each KV row from the tokens it holds, so a
wrong slot, position, padding or re-prefill shows up as different tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from djl_python.engine import Engine, SamplingParams
from tests.models import dtype_kwargs
from tests.neuron.conftest import load_neuron
from tests.staggered import generate_alone, run_staggered

PROMPTS = [
    "The quick brown fox",
    "Paris is the capital of France. Berlin is",
    "Hello",
    "def f(x):\n    return x * 2",
    "日本語のテキスト",
]
ARRIVALS = (0, 0, 2, 3, 6)  # the engine step at which each prompt is added
MAX_NEW_TOKENS = 10


def check(model_dir: Path, tnx, strategy: str, **options) -> int:
    """Run the staggered workload, compare with ``generate``; return the number of prefill calls (joins)."""
    backend = load_neuron(model_dir, max_rolling_batch_size=3, n_positions=64, **options)
    assert backend.info.extra["strategy"] == strategy
    joins = 0
    prefill = backend.prefill

    def counting_prefill(*args, **kwargs):
        nonlocal joins
        joins += 1
        return prefill(*args, **kwargs)

    backend.prefill = counting_prefill
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    got = run_staggered(Engine(backend, tokenizer), prompts, SamplingParams(max_new_tokens=MAX_NEW_TOKENS), ARRIVALS)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwargs(torch.float32)).eval()
    assert got == [generate_alone(model, p, MAX_NEW_TOKENS) for p in prompts]
    assert max(len(t) for t in got) == MAX_NEW_TOKENS  # not everything stopped at once on EOS
    return joins


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_continuous_batching_matches_generate(tiny_model_factory, tnx, arch: str) -> None:
    check(tiny_model_factory(arch), tnx, "continuous_batching", context_length_estimate="16,32")
    # Prefills were padded to the smallest bucket that fits, never beyond.
    assert {b for _, b in tnx.events("context_bucket")} <= {16, 32}
    assert tnx.events("reset") == []  # continuous batching never resets the shared cache


@pytest.mark.parametrize("arch", ["gpt2", "opt", "bloom", "gptj", "gpt_neox"])
def test_naive_rolling_batch_matches_generate(tiny_model_factory, tnx, arch: str) -> None:
    dtype = {"dtype": "fp32"} if arch == "gpt_neox" else {}
    joins = check(tiny_model_factory(arch), tnx, "naive_rolling_batch", **dtype)
    # A join re-prefills the static batch once: the engine decodes the running rows (a
    # plain static step) before it prefills the newcomers, so no decode ever rebuilds.
    assert joins >= 3 and len(tnx.events("reset")) == joins


def test_llama_forced_naive_matches_generate(tiny_llama, tnx) -> None:
    check(tiny_llama, tnx, "naive_rolling_batch", rolling_batch_strategy="naive_rolling_batch")
