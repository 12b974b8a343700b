"""The API layer's body checks (issue 13 items 2 and 3), without a server; the HTTP side is
tests/serving/test_http_hostile_input.py."""

from __future__ import annotations

import json
import math

import pytest

from djl_python.api import lmi
from djl_python.api.body import MAX_DEPTH, json_object
from djl_python.api.render import dumps, sse
from djl_python.engine.request import InvalidRequest


def test_json_output_is_always_strict_json():
    text = dumps({"logprob": math.nan, "top": [{"x": math.inf}, -math.inf], "ok": 1.5})
    assert json.loads(text, parse_constant=lambda t: pytest.fail(t)) == {"logprob": None, "top": [{"x": None}, None],
                                                                          "ok": 1.5}
    assert "NaN" not in sse({"v": math.nan})


def test_depth_limit_allows_every_real_shape_and_refuses_deeper():
    ok = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert json_object(json.dumps(ok)) == ok
    nested: object = 1
    for _ in range(MAX_DEPTH + 1):
        nested = {"a": nested}
    with pytest.raises(InvalidRequest) as refused:
        json_object(json.dumps({"inputs": "x", "tools": nested}))
    assert refused.value.field == "tools"


def test_json_too_deep_for_the_decoder_is_invalid_request():
    with pytest.raises(InvalidRequest) as refused:
        json_object("[" * 200_000 + "]" * 200_000)
    assert refused.value.field == "body"


@pytest.mark.parametrize(("raw", "field"), [
    ('{"inputs": "a\\ud800"}', "inputs"),
    ('{"inputs": ["ok", "\\udc00b"]}', "inputs.1"),
    ('{"inputs": "x", "parameters": {"stop_sequences": ["\\ud83d"]}}', "parameters.stop_sequences.0"),
])
def test_lone_surrogates_are_refused_naming_the_field(raw, field):
    with pytest.raises(InvalidRequest) as refused:
        lmi.parse_request(raw)
    assert refused.value.field == field


def test_a_surrogate_pair_is_a_character_and_accepted():
    assert lmi.parse_request('{"inputs": "\\ud83d\\ude00"}').prompts == ("\N{GRINNING FACE}",)


def test_the_djl_handler_path_checks_mappings_too():
    with pytest.raises(InvalidRequest):
        json_object({"inputs": "\ud800"})
