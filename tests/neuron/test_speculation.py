"""Speculative decoding on Neuron, as LMI 0.28 serves it, through the double's ``speculative_forward``
(c8d6bdc llama/model.py:180-217, 1ade6d7 llama/model.py:308-349) and ``enable_speculative_decoder``.

Greedy output must equal plain greedy decoding of the target, whatever the draft proposes: a draft
that is the target itself (every proposal accepted), and an unrelated random draft (most rejected).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from djl_python.backends.neuron.versions import NeuronVersionError
from djl_python.config import ConfigError
from djl_python.engine import SamplingParams
from djl_python.engine.engine import Engine
from djl_python.engine.speculation import accept_greedy
from tests.neuron.conftest import load_neuron

PROMPTS = [[5, 17, 42, 99, 7], [3, 4], list(range(10, 40))]


def test_greedy_acceptance_keeps_the_models_own_choices() -> None:
    assert accept_greedy([4, 5, 6], [4, 5, 6, 7]) == [4, 5, 6, 7]  # every proposal kept, plus the bonus token
    assert accept_greedy([4, 9, 6], [4, 5, 6, 7]) == [4, 5]  # the first disagreement is replaced
    assert accept_greedy([9, 5, 6], [4, 5, 6, 7]) == [4]
    with pytest.raises(ValueError):
        accept_greedy([1, 2], [1, 2])


def plain_greedy(model_dir: Path, prompt: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    from tests.models import dtype_kwargs

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                             pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def engine_tokens(backend, prompt: list[int], n: int, **params) -> list[int]:
    from djl_python.loader import load_tokenizer

    engine = Engine(backend, load_tokenizer(str(backend.model.checkpoint)))
    result = engine.generate([prompt], SamplingParams(max_new_tokens=n, ignore_eos=True, **params))[0]
    return list(result.token_ids)


@pytest.fixture
def random_draft(tiny_model_factory, tmp_path: Path) -> Path:
    """A draft with the target's vocabulary but other weights: it proposes mostly wrong tokens."""
    import shutil

    from transformers import AutoModelForCausalLM, LlamaConfig

    target = tiny_model_factory("llama")
    config = LlamaConfig.from_pretrained(str(target))
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(config)
    out = tmp_path / "draft"
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (target / name).is_file():
            shutil.copy2(target / name, out / name)
    return out


@pytest.mark.parametrize("tnx", ["0.11", "0.13"], indirect=True)
@pytest.mark.parametrize("draft_kind", ["itself", "random"])
def test_speculative_greedy_equals_plain_greedy(tiny_llama: Path, random_draft: Path, tnx, draft_kind: str) -> None:
    draft = tiny_llama if draft_kind == "itself" else random_draft
    backend = load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=draft,
                          speculative_length=4)
    assert backend.limits.speculation_length == 4 and tnx.events("enable_speculative_decoder")
    for prompt in PROMPTS:
        tnx.CALLS.clear()
        assert engine_tokens(backend, prompt, 20) == plain_greedy(tiny_llama, prompt, 20), (draft_kind, prompt)
        steps = tnx.events("speculative_forward")
        assert steps, "no speculative step ran"
        if draft_kind == "itself":  # every proposal accepted: about k tokens per target call
            assert len(steps) <= 20 // 4 + 1


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_sampled_requests_decode_plainly_and_keep_the_draft_in_step(tiny_llama: Path, tnx) -> None:
    """A sampled request never speculates; a greedy one after it still matches (the draft saw every token)."""
    backend = load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=tiny_llama,
                          speculative_length=3)
    tnx.CALLS.clear()
    engine_tokens(backend, PROMPTS[0], 8, do_sample=True, temperature=0.8, seed=3)
    assert not tnx.events("speculative_forward")
    assert engine_tokens(backend, PROMPTS[1], 12) == plain_greedy(tiny_llama, PROMPTS[1], 12)


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_speculation_stops_where_the_cache_ends(tiny_llama: Path, tnx) -> None:
    """Near n_positions there is no room for k positions: plain decoding finishes the sequence."""
    backend = load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=tiny_llama,
                          speculative_length=4)
    prompt = list(range(1, 50))
    assert engine_tokens(backend, prompt, 14) == plain_greedy(tiny_llama, prompt, 14)


@pytest.mark.parametrize("tnx", ["0.10-late"], indirect=True)
def test_speculation_needs_0_11(tiny_llama: Path, tnx) -> None:
    with pytest.raises(NeuronVersionError, match="option.speculative_draft_model.*>= 0.11"):
        load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=tiny_llama)


def test_speculation_serves_one_sequence(tiny_llama: Path, tnx) -> None:
    with pytest.raises(ConfigError, match="option.max_rolling_batch_size=1"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, speculative_draft_model=tiny_llama)


def test_speculation_needs_a_llama_target(tiny_model_factory, tnx) -> None:
    with pytest.raises(NeuronVersionError, match="needs a Llama target"):
        load_neuron(tiny_model_factory("gpt2"), max_rolling_batch_size=1, n_positions=64,
                    speculative_draft_model=tiny_model_factory("gpt2"))


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_saved_graphs_include_the_speculation_graph(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    """djl-partition saves the speculation graphs with the rest (enable_speculative_decoder before to_neuron),
    and the folder reloads without compiling; without the option the speculation graph is not there."""
    from djl_python.partition import main

    out = tmp_path / "out"
    options = ["device=neuron", "max_rolling_batch_size=1", "n_positions=64", f"speculative_draft_model={tiny_llama}",
               "speculative_length=4"]
    argv = ["--model-id", str(tiny_llama), "--save-mp-checkpoint-path", str(out)]
    for option in options:
        argv += ["--option", option]
    assert main(argv) == 0
    tnx.CALLS.clear()
    load_neuron(out, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=tiny_llama,
                speculative_length=4)
    assert tnx.events("to_neuron")[0][2] == "loaded"


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_the_draft_takes_its_own_degree_and_graphs(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    """draft_model_tp_size and draft_model_compiled_path reach the draft's load, as in LMI 0.28
    (transformers_neuronx.py:148-163); the target keeps its own."""
    graphs = tmp_path / "draft-graphs"
    graphs.mkdir()
    (graphs / "stale.neff").write_bytes(b"x")  # graphs of other settings: tried, then compiled
    load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, tensor_parallel_degree=2,
                speculative_draft_model=tiny_llama, draft_model_tp_size=1, draft_model_compiled_path=graphs)
    target, *drafts = tnx.events("from_pretrained")  # the draft: tried with the saved graphs, then compiled
    assert target[3]["tp_degree"] == 2 and len(drafts) == 2 and all(d[3]["tp_degree"] == 1 for d in drafts)
    assert [call[2] for call in tnx.events("load")] == [str(graphs)]


@pytest.mark.parametrize("tnx", ["0.11", "0.13"], indirect=True)
def test_a_prompt_one_past_the_largest_bucket_speculates(tiny_llama: Path, tnx) -> None:
    """The re-prefill of a prompt one column past the largest context bucket runs the bucket and then one token
    step, leaving the cursor at the prompt's length, which speculation checks."""
    backend = load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, context_length_estimate="16,32",
                          speculative_draft_model=tiny_llama, speculative_length=4)
    prompt = list(range(5, 38))
    assert len(prompt) == 33
    tnx.CALLS.clear()
    assert engine_tokens(backend, prompt, 16) == plain_greedy(tiny_llama, prompt, 16)
    assert tnx.events("speculative_forward")


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_the_draft_holds_every_position_the_target_does(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    """A draft whose own config says fewer positions gets the target's n_positions, as LMI copies the target's
    properties to the draft (djl-serving v0.28.0 transformers_neuronx.py:148-163)."""
    import json
    import shutil

    draft = tmp_path / "short-draft"
    shutil.copytree(tiny_llama, draft)
    config = json.loads((draft / "config.json").read_text())
    config["max_position_embeddings"] = 32
    (draft / "config.json").write_text(json.dumps(config))
    backend = load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=draft,
                          speculative_length=4)
    target, draft_call = tnx.events("from_pretrained")
    assert draft_call[3]["n_positions"] == target[3]["n_positions"] == 64
    prompt = list(range(5, 35))
    assert engine_tokens(backend, prompt, 24) == plain_greedy(tiny_llama, prompt, 24)


def test_a_speculative_length_below_2_is_refused(tiny_llama: Path, tnx) -> None:
    with pytest.raises(ConfigError, match="speculative_length >= 2"):
        load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=tiny_llama,
                    speculative_length=1)


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_speculation_follows_the_draft_option_on_compiled_folders(tiny_llama: Path, tnx, tmp_path: Path,
                                                                  caplog) -> None:
    """Graphs partitioned with speculation serve without a draft (the extra graph is never looked up); graphs
    partitioned without it ignore a draft with a warning (adding the graph would miss every saved NEFF)."""
    from djl_python.partition import main

    def partition(out: Path, *extra: str) -> Path:
        argv = ["--model-id", str(tiny_llama), "--save-mp-checkpoint-path", str(out)]
        for option in ("device=neuron", "max_rolling_batch_size=1", "n_positions=64", *extra):
            argv += ["--option", option]
        assert main(argv) == 0
        return out

    with_graph = partition(tmp_path / "with", f"speculative_draft_model={tiny_llama}", "speculative_length=4")
    backend = load_neuron(with_graph, max_rolling_batch_size=1, n_positions=64)
    assert backend.limits.speculation_length == 0
    without = partition(tmp_path / "without")
    with caplog.at_level("WARNING"):
        backend = load_neuron(without, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=tiny_llama)
    assert backend.limits.speculation_length == 0 and "has no speculation graph" in caplog.text


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_the_draft_counts_in_the_memory_plan_with_the_target(tiny_llama: Path, tnx) -> None:
    """The draft shares the target's NeuronCores: a budget the target alone fits, but not the two, is refused."""
    import json

    from djl_python.backends.neuron.memory import plan_neuron_memory

    hf = json.loads((tiny_llama / "config.json").read_text())
    alone = plan_neuron_memory(hf, tiny_llama, tp_degree=1, slots=1, n_positions=64, amp="f16", quantized=False)
    budget = f"{alone.total_bytes * 3 // 2}"
    load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, tensor_parallel_degree=1, memory_budget=budget)
    with pytest.raises(ConfigError, match="option.max_rolling_batch_size"):
        load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, tensor_parallel_degree=1,
                    memory_budget=budget, speculative_draft_model=tiny_llama)


@pytest.mark.parametrize("tnx", ["0.11"], indirect=True)
def test_a_draft_that_cannot_hold_the_targets_positions_is_named(tiny_llama: Path, tiny_model_factory, tnx,
                                                                 tmp_path: Path) -> None:
    """A Mistral draft whose sliding window is shorter than the target's n_positions (before 0.12 its window
    drifts past it) is refused naming the draft option, not an n_positions the user never set."""
    import json
    import shutil

    draft = tmp_path / "mistral-draft"
    shutil.copytree(tiny_model_factory("mistral"), draft)
    config = json.loads((draft / "config.json").read_text())
    config["sliding_window"] = 16
    (draft / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="option.speculative_draft_model.*n_positions 64"):
        load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, speculative_draft_model=draft)
