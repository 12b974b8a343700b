"""Through the TNX double, the engine's greedy tokens equal ``transformers`` ``generate`` alone, on every release.

More requests than slots, joining at different steps (one prompt is a single
token), so slots are released and reused. The double follows each release's
padding, last-token selection, masks and full-batch decode
(``tests/neuron_double/transformers_neuronx/_versions.py``), so a wrong slot,
position, padding, answer column or re-prefill shows up as different tokens.

The strategy expected per architecture and release is written here from the
issue and docs/neuron.md (not read from the product): continuous batching for
llama and mistral on every release (0.9 on; mistral not on the late 0.10, whose per-row
window counter breaks it); one row at a time for GPT-J, and for
llama forced onto the naive strategy before 0.11 (its left-padded static rows
answer NaN there, and so does the double); the naive rolling batch otherwise.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from djl_python.engine import Engine, SamplingParams
from tests.models import dtype_kwargs
from tests.neuron.conftest import MATRIX, load_neuron
from tests.staggered import generate_alone, run_staggered

PROMPTS = ["The quick brown fox", "Paris is the capital of France. Berlin is", "Hello", "def f(x):\n    return x"]
ARRIVALS = (0, 0, 2, 3)  # the engine step at which each prompt is added
MAX_NEW_TOKENS = 6
ARCHS = ("llama", "mistral", "gpt2", "opt", "bloom", "gpt_neox", "gptj")
MULTI_BUCKET = ("0.10-late", "0.11", "0.13")  # continuous batching with several context buckets


def expected_strategy(arch: str, release: str) -> str:
    if arch == "gptj":
        return "single_row"
    if arch == "llama" or (arch == "mistral" and release != "0.10-late"):
        return "continuous_batching"
    return "naive_rolling_batch"


@lru_cache(maxsize=None)
def reference(model_dir: Path) -> tuple[tuple[int, ...], ...]:
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwargs(torch.float32)).eval()
    return tuple(tuple(generate_alone(model, tokenizer(p)["input_ids"], MAX_NEW_TOKENS)) for p in PROMPTS)


def check(model_dir: Path, strategy: str, **options) -> None:
    """Run the staggered workload through the Neuron backend and compare with ``generate`` alone."""
    backend = load_neuron(model_dir, max_rolling_batch_size=3, n_positions=64, **options)
    assert backend.info.extra["strategy"] == strategy
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert min(len(p) for p in prompts) == 1  # a one-column prefill is part of the workload
    got = run_staggered(Engine(backend, tokenizer), prompts, SamplingParams(max_new_tokens=MAX_NEW_TOKENS), ARRIVALS)
    assert [tuple(t) for t in got] == list(reference(model_dir))
    assert max(len(t) for t in got) == MAX_NEW_TOKENS  # not everything stopped at once on EOS


@pytest.mark.parametrize("tnx", MATRIX, indirect=True)
@pytest.mark.parametrize("arch", ARCHS)
def test_staggered_requests_match_generate(tiny_model_factory, tnx, arch: str) -> None:
    release = tnx.RELEASE.label
    strategy = expected_strategy(arch, release)
    options = {"dtype": "fp32"} if arch == "gpt_neox" else {}
    if strategy == "continuous_batching" and release in MULTI_BUCKET:
        options["context_length_estimate"] = "4,64"
    check(tiny_model_factory(arch), strategy, **options)
    if strategy == "continuous_batching":
        assert tnx.events("reset") == []  # continuous batching never resets the shared cache
        if release in MULTI_BUCKET:
            assert {b for _, b in tnx.events("context_bucket")} == {4, 64}  # a short prompt uses the small bucket
    elif strategy == "single_row":
        (call,) = tnx.events("from_pretrained")
        assert call[3]["batch_size"] == 1
    else:
        # A join re-prefills the static batch once: the engine decodes the running rows (a plain
        # static step) before it prefills the newcomers, so no decode ever rebuilds.
        assert len(tnx.events("reset")) >= 3


@pytest.mark.parametrize("tnx", ["0.9", "0.10-late", "0.13"], indirect=True)
def test_llama_forced_naive_matches_generate(tiny_llama, tnx) -> None:
    """Before 0.11 the double answers NaN for a left-padded static row (transformers-neuronx#79):
    a naive batch of rows of different lengths would not match, so one row is served at a time."""
    fixed = tnx.RELEASE.label == "0.13"
    check(tiny_llama, "naive_rolling_batch" if fixed else "single_row", rolling_batch_strategy="naive_rolling_batch")
    assert not tnx.events("masked_static_nan")
