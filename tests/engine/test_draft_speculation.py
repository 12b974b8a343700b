"""Draft-model speculative decoding on the PyTorch backend (``engine/proposers.py``): greedy output
identical to plain decoding on every forward, with a draft of another architecture (few proposals
kept) and with the model as its own draft (every proposal kept, fewer steps); the draft's rows
caught up after steps it did not see; the option reaching the engine; a draft whose logits width
differs refused, and one whose tokenizer numbers tokens otherwise warned about, naming the key."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.config import ConfigError, load_config
from djl_python.engine import Engine, SamplingParams
from djl_python.engine.proposers import DraftProposer
from tests.engine.one_at_a_time import one_at_a_time
from tests.models import FORWARDS, forward_options, make_tokenizer, tiny_config

PROMPTS = [[5, 6, 7, 8, 9] * 6, list(range(20, 60)), [3, 4] * 10 + list(range(100, 110))]
PARAMS = SamplingParams(max_new_tokens=30, ignore_eos=True)


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_greedy_output_equals_plain_decoding(tiny_model_factory, arch: str, forward: str) -> None:
    folder = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def load(path: Path) -> PyTorchBackend:
        return PyTorchBackend.load(path, max_slots=2, n_positions=128, **forward_options(forward))

    plain, plain_steps = one_at_a_time(Engine(load(folder), tokenizer), PROMPTS, PARAMS)
    other = tiny_model_factory("gpt2" if arch != "gpt2" else "llama")
    assert one_at_a_time(Engine(load(folder), tokenizer, draft=load(other), draft_length=4), PROMPTS, PARAMS)[0] == plain
    itself, steps = one_at_a_time(Engine(load(folder), tokenizer, draft=load(folder), draft_length=4), PROMPTS, PARAMS)
    assert itself == plain
    assert steps < plain_steps / 2  # its own draft: every proposal kept, four tokens a step


def test_the_draft_catches_up_after_steps_it_did_not_see(tiny_llama: Path) -> None:
    """Two requests decode plainly side by side; when one ends, the other speculates, its draft row
    fed everything decoded meanwhile; a third request then reuses the slot from position 0."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))

    def load() -> PyTorchBackend:
        return PyTorchBackend.load(tiny_llama, max_slots=2, n_positions=128)

    def run(engine: Engine) -> list[list[int]]:
        short = SamplingParams(max_new_tokens=5, ignore_eos=True)
        results = engine.generate([PROMPTS[0], PROMPTS[1]], [PARAMS, short])
        return [r.token_ids for r in results] + [engine.generate([PROMPTS[2]], PARAMS)[0].token_ids]

    plain = run(Engine(load(), tokenizer))
    engine = Engine(load(), tokenizer, draft=load(), draft_length=5)
    proposer = engine.speculator.proposer
    assert isinstance(proposer, DraftProposer)
    calls = []
    decode_and_prefill = proposer.draft.decode_and_prefill
    proposer.draft.decode_and_prefill = lambda *a, **k: calls.append(k.get("starts")) or decode_and_prefill(*a, **k)
    assert run(engine) == plain
    assert calls[0] is None and any(c for c in calls)  # a first catch-up from 0, later ones continue rows


def test_the_option_loads_a_draft_and_a_foreign_vocabulary_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    from djl_python.loader import load_engine

    props = {"device": "cpu", "max_rolling_batch_size": "1", "n_positions": "64",
             "speculative_draft_model": str(tiny_llama), "speculative_length": "4"}
    engine = load_engine(load_config(tiny_llama, properties=props, env={}))
    assert isinstance(engine.speculator.proposer, DraftProposer) and engine.speculator.length == 4
    assert engine.speculator.proposer.draft.limits.max_slots == 1
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama", 64)
    config.vocab_size = 1024
    wide = tmp_path / "wide"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(wide))
    make_tokenizer(wide)
    with pytest.raises(ConfigError, match="speculative_draft_model: the draft's vocabulary"):
        load_engine(load_config(tiny_llama, properties={**props, "speculative_draft_model": str(wide)}, env={}))
    with pytest.raises(ConfigError, match="speculative_method=ngram and speculative_draft_model both set"):
        load_config(tiny_llama, properties={**props, "speculative_method": "ngram"}, env={})


def _draft_copy(tiny_llama: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_llama, folder)
    return folder


def _load_with_draft(tiny_llama: Path, draft: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Load an engine with ``draft``; the warnings its load logged."""
    from djl_python.loader import load_engine

    props = {"device": "cpu", "max_rolling_batch_size": "1", "n_positions": "64",
             "speculative_draft_model": str(draft), "speculative_length": "4"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="djl_python.loader"):
        engine = load_engine(load_config(tiny_llama, properties=props, env={}))
    assert isinstance(engine.speculator.proposer, DraftProposer)  # a warning, never a refusal
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "djl_python.loader"]


def test_a_draft_whose_tokenizer_numbers_tokens_otherwise_is_warned_about(
        tiny_llama: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same logits width, two tokens' ids swapped in the draft's tokenizer: its proposals would name
    other tokens. The load warns, naming the key and the tokens; the same tokenizer draws no warning."""
    assert _load_with_draft(tiny_llama, tiny_llama, caplog) == []
    foreign = _draft_copy(tiny_llama, tmp_path, "foreign")
    spec = json.loads((foreign / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    first, second = sorted(vocab)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (foreign / "tokenizer.json").write_text(json.dumps(spec))
    warnings = _load_with_draft(tiny_llama, foreign, caplog)
    assert len(warnings) == 1 and warnings[0].startswith("speculative_draft_model: the draft's tokenizer differs")
    assert "2 of the" in warnings[0] and repr(first) in warnings[0]


def test_a_draft_without_a_readable_tokenizer_loads(tiny_llama: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """No vocabulary file in the draft's folder: not compared, no warning. A tokenizer file that does
    not parse: a warning that it could not be read, and the load goes on."""
    bare = _draft_copy(tiny_llama, tmp_path, "bare")
    (bare / "tokenizer.json").unlink()
    assert _load_with_draft(tiny_llama, bare, caplog) == []
    broken = _draft_copy(tiny_llama, tmp_path, "broken")
    (broken / "tokenizer.json").write_text('{"model": {}}')
    warnings = _load_with_draft(tiny_llama, broken, caplog)
    assert len(warnings) == 1 and "could not read the draft's tokenizer" in warnings[0]


@pytest.mark.parametrize(("model", "draft", "problem"), [
    ({"a": 0, "b": 1, "c": 2}, {"a": 0, "b": 1, "c": 2}, None),
    ({"a": 0, "b": 1, "c": 2, "d": 3}, {"a": 0, "b": 1, "c": 2}, None),  # a token only the model holds
    ({"a": 0, "b": 1, "c": 2}, {}, None),
    ({"a": 0, "b": 1, "c": 2}, {"a": 0, "b": 2, "c": 1}, "2 of the 3 tokens both tokenizers hold have other ids ("
                                                          "'b' 2 -> 1, 'c' 1 -> 2)"),
    ({"a": 0, "b": 1, "c": 2}, {"a": 0, "x": 1, "y": 2, "z": 3}, "holds only 1 of the draft's 4 tokens"),
])
def test_draft_vocabulary_rule(model: dict, draft: dict, problem: str | None) -> None:
    from djl_python.loader import draft_vocabulary_problem

    got = draft_vocabulary_problem(model, draft)
    assert got == problem if problem is None else problem in got


def test_after_a_rejected_proposal_the_draft_row_is_right_again(tiny_llama: Path) -> None:
    """The model as its own draft, with the second proposal of the first step corrupted: that step keeps
    two tokens, and every later step keeps all its proposals, which holds only if the draft's row was
    rolled back to the last token both agree on (a row that kept the corrupted token would propose
    from the wrong history)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))

    def load() -> PyTorchBackend:
        return PyTorchBackend.load(tiny_llama, max_slots=1, n_positions=128)

    engine = Engine(load(), tokenizer, draft=load(), draft_length=5)
    proposer = engine.speculator.proposer
    assert isinstance(proposer, DraftProposer)
    vocab = engine.limits.vocab_size
    propose, kept = proposer.propose, []

    def corrupt_first(seq, n):
        proposals = propose(seq, n)
        if not kept:
            proposals[1] = (proposals[1] + 1) % vocab
        return proposals

    proposer.propose = corrupt_first  # type: ignore[method-assign]
    keep = proposer.kept
    proposer.kept = lambda seq, proposals, accepted: kept.append(len(accepted)) or keep(seq, proposals, accepted)
    plain = Engine(load(), tokenizer).generate([PROMPTS[1]], PARAMS)[0].token_ids
    assert engine.generate([PROMPTS[1]], PARAMS)[0].token_ids == plain
    assert kept[0] == 2 and all(n == 5 for n in kept[1:-1])  # the last step may stop at max_new_tokens
