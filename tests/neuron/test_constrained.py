"""Constrained decoding on the Neuron backend, over the transformers-neuronx double: the engine masks
the logits the device returns (host-side sampling, as LMI's Neuron handler samples), so every
constrained output matches its constraint while free requests in the same batch decode as alone;
a request with a constraint never takes the speculative path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from djl_python.engine import SamplingParams
from djl_python.engine.constraint import Constraint
from djl_python.engine.engine import Engine
from tests.neuron.conftest import load_neuron

SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green"]},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["color", "n"], "additionalProperties": False}
REGEX = r"[a-c]{2}-[0-9]"


def engine_for(backend) -> Engine:
    from djl_python.loader import load_tokenizer

    return Engine(backend, load_tokenizer(str(backend.model.checkpoint)))


@pytest.mark.parametrize("tnx", ["0.9", "0.13"], indirect=True)
@pytest.mark.parametrize("strategy", ["continuous_batching", "naive_rolling_batch"])
def test_constrained_and_free_requests_share_a_neuron_batch(tiny_llama: Path, tnx, strategy: str) -> None:
    backend = load_neuron(tiny_llama, n_positions=256, max_rolling_batch_size=4, rolling_batch_strategy=strategy)
    engine = engine_for(backend)
    free = SamplingParams(max_new_tokens=10, ignore_eos=True)
    alone = engine.generate([[5, 17, 42]], free)[0].token_ids
    # Compact JSON: a bounded longest output, well inside the 256 positions.
    params = [free,
              SamplingParams(max_new_tokens=120, do_sample=True, seed=1,
                             constraint=Constraint.json_schema(SCHEMA, "schema", whitespace="")),
              SamplingParams(max_new_tokens=20, constraint=Constraint("regex", REGEX, "regex")),
              SamplingParams(max_new_tokens=20, do_sample=True, seed=2, constraint=Constraint.choice(["yes", "no"], "c"))]
    results = engine.generate([[5, 17, 42], [3, 4], [9, 9, 9, 9], [1, 2, 3]], params)
    assert results[0].token_ids == alone
    jsonschema.validate(json.loads(results[1].text), SCHEMA)
    assert re.fullmatch(REGEX, results[2].text)
    assert results[3].text in ("yes", "no")
    assert all(r.finish_reason == "eos_token" for r in results[1:])


def test_a_constrained_request_decodes_plainly_beside_a_draft(tiny_llama: Path, tnx) -> None:
    backend = load_neuron(tiny_llama, n_positions=256, max_rolling_batch_size=1,
                          speculative_draft_model=str(tiny_llama), speculative_length=4)
    engine = engine_for(backend)
    calls = []
    original = backend.speculate
    backend.speculate = lambda *a: calls.append(a) or original(*a)  # type: ignore[method-assign]
    result = engine.generate([[5, 17, 42]], SamplingParams(
        max_new_tokens=60, constraint=Constraint.json_schema(SCHEMA, "schema", whitespace="")))[0]
    jsonschema.validate(json.loads(result.text), SCHEMA)
    assert calls == []
    engine.generate([[5, 17, 42]], SamplingParams(max_new_tokens=8, ignore_eos=True))
    assert calls  # the same engine speculates for a plain greedy request


def test_prefix_cache_options_warn_on_neuron(tiny_llama: Path, tnx, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="djl_python.backends.dispatch"):
        backend = load_neuron(tiny_llama, n_positions=64, max_rolling_batch_size=2, enable_prefix_caching="true",
                              prefix_cache_rows=4)
    assert backend.limits.prefix_cache_rows == 0 and not backend.limits.can_verify
    assert "option.enable_prefix_caching has no effect on Neuron" in caplog.text
    assert "option.prefix_cache_rows has no effect on Neuron" in caplog.text
