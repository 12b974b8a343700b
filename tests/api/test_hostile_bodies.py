"""The API layer's body checks, without a server; the HTTP side is
tests/serving/test_http_hostile_input.py."""

from __future__ import annotations

import json
import math

import pytest

from djl_python.api import lmi, tgi
from djl_python.api.body import MAX_DEPTH, json_object, structure_outside_strings, validate
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
        validate(tgi.TgiRequest, {"inputs": "x", "parameters": {"grammar": {"type": "json", "value": nested}}})
    assert refused.value.field == "parameters"


def test_values_a_schema_ignores_are_never_walked():
    """LMI keeps unknown keys only to name them: their values, however deep or odd, cost no walk."""
    nested: object = "\ud800"
    for _ in range(MAX_DEPTH * 4):
        nested = [nested]
    request = lmi.parse_request(json.dumps({"inputs": "x", "junk": nested, "parameters": {"more": nested}}))
    assert request.prompts == ("x",) and set(request.ignored) >= {"junk"}


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
    with pytest.raises(InvalidRequest) as refused:
        lmi.parse_request({"inputs": "\ud800"})
    assert refused.value.field == "inputs"


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": [1, 2, 3], "b": {"c": "x"}}', 6),  # 3 commas, 1 array, 2 objects
    ('{"a": "1, 2, [3], {4}"}', 1),
    ('{"a": "quote \\" and, [comma"}', 1),
    ('{"a": "back\\\\", "b": ","}', 2),  # an escaped backslash ends the string
])
def test_the_exact_scan_counts_structure_outside_strings(text, expected):
    assert structure_outside_strings(text) == expected


def test_the_exact_scan_is_linear_on_an_unterminated_string_of_escaped_quotes():
    """A regular expression for whole strings rescans to the end from every quote when none
    closes (quadratic time, with the interpreter lock held); the scan here removes escapes and
    splits on quotes once. pytest-timeout fails the old behaviour."""
    text = '"' + '\\",' * 140_000
    assert structure_outside_strings(text) == 0
    with pytest.raises(InvalidRequest):
        lmi.parse_request(text)


@pytest.mark.parametrize("junk", [
    '{"inputs": "hi", "x": [%s]}' % ",".join(["[]"] * 200_000),  # an unknown field: LMI would ignore it
    json.dumps({"inputs": ["a"] * 300_000}),  # strings
    json.dumps({"inputs": "hi", "parameters": {"stop": [[]] * 140_000}}),
])
def test_a_body_with_more_values_than_any_request_needs_is_refused_before_decoding(junk):
    with pytest.raises(InvalidRequest) as refused:
        lmi.parse_request(junk)
    assert refused.value.field == "body" and "JSON values" in refused.value.message


def test_a_long_prose_prompt_full_of_commas_and_brackets_is_not_counted_as_values():
    prompt = "Hello, world: [this] is {a} test, with \"quotes\", and commas. " * 40_000
    assert lmi.parse_request(json.dumps({"inputs": prompt})).prompts == (prompt,)


def test_a_list_of_wrong_items_is_refused_at_its_first_item():
    """pydantic would report every bad item; ``FailFastList`` stops at the first."""
    with pytest.raises(InvalidRequest) as refused:
        lmi.parse_request(json.dumps({"inputs": "hi", "parameters": {"stop": [[]] * 50_000}}))
    assert refused.value.field == "parameters.stop.0"


def test_the_deployment_docs_state_the_value_cap_in_force():
    from pathlib import Path

    from djl_python.api.body import MAX_JSON_VALUES

    docs = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| JSON values in a body |"))
    assert f"{MAX_JSON_VALUES:,}" in row, row
