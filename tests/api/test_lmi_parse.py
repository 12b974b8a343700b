"""LMI request parsing: every bad request names its field; good ones map to SamplingParams."""

from __future__ import annotations

import json

import pytest

from djl_python.engine.request import InvalidRequest
from djl_python.api.chat import flatten
from djl_python.api.lmi import parse_request


def test_lmi_request_maps_every_parameter():
    body = {
        "inputs": "Hello",
        "parameters": {
            "max_new_tokens": 7, "do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9,
            "typical_p": 0.95, "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25,
            "seed": 3, "ignore_eos": True, "stop": ["\n\n", "END"], "stop_token_ids": [9],
            "details": True, "decoder_input_details": True, "return_full_text": True, "top_n_tokens": 2,
            "some_future_option": 1,
        },
    }
    req = parse_request(json.dumps(body).encode())
    p = req.params
    assert (p.max_new_tokens, p.do_sample, p.temperature, p.top_k, p.top_p, p.typical_p) == (7, True, 0.7, 5, 0.9, 0.95)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty, p.seed) == (1.1, 0.5, 0.25, 3)
    assert p.ignore_eos and p.stop == ("\n\n", "END") and p.stop_token_ids == (9,)
    assert p.logprobs and p.top_logprobs == 2
    assert req.details and req.decoder_input_details and req.return_full_text and req.top_n_tokens == 2
    assert req.prompts == ("Hello",) and not req.is_chat and req.output_formatter == "json"
    assert req.ignored == ("some_future_option",)


def test_presence_penalty_does_not_become_repetition_penalty():
    p = parse_request({"inputs": "x", "parameters": {"presence_penalty": 0.0}}).params
    assert p.repetition_penalty is None and p.presence_penalty == 0.0


def test_stop_sequences_alias_and_text_plain():
    assert parse_request({"inputs": "x", "parameters": {"stop_sequences": "##"}}).params.stop == ("##",)
    req = parse_request("just text {not json".encode(), "text/plain; charset=utf-8")
    assert req.prompts == ("just text {not json",) and req.params.max_new_tokens == 30


@pytest.mark.parametrize(
    ("stream", "tgi", "default", "expected"),
    [(False, False, None, "json"), (True, False, None, "jsonlines"), (True, True, None, "sse"),
     (False, False, "jsonlines", "jsonlines"), (True, False, "none", "none")],
)
def test_output_formatter_resolution(stream, tgi, default, expected):
    req = parse_request({"inputs": "x", "stream": stream}, default_output_formatter=default, tgi_compat=tgi)
    assert req.output_formatter == expected and req.stream == stream


def test_list_inputs_are_a_client_batch():
    req = parse_request({"inputs": ["a", "b"]})
    assert req.prompts == ("a", "b")
    with pytest.raises(InvalidRequest) as e:
        req.check_single()
    assert e.value.field == "inputs"


def test_chat_request():
    req = parse_request({
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
        "max_tokens": 12, "temperature": 0.5, "top_p": 0.8, "seed": 1, "logprobs": True, "top_logprobs": 2,
        "stop": "x", "model": "m",
    })
    assert req.is_chat and flatten(req.messages) == [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "hi there"}]
    p = req.params
    assert (p.max_new_tokens, p.do_sample, p.temperature, p.top_p, p.seed, p.stop) == (12, True, 0.5, 0.8, 1, ("x",))
    assert p.logprobs and p.top_logprobs == 2 and req.output_formatter == "json_chat" and req.model == "m"
    streamed = parse_request({"messages": [{"role": "user", "content": "hi"}], "stream": True, "temperature": 0})
    assert streamed.output_formatter == "jsonlines_chat" and streamed.params.greedy


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("", "body"),
        ("[1, 2]", "body"),
        ("{not json", "body"),
        ({"parameters": {}}, "inputs"),
        ({"inputs": 5}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": ["a", 1]}, "inputs.1"),
        ({"inputs": "x", "stream": "yes"}, "stream"),
        ({"inputs": "x", "parameters": []}, "parameters"),
        ({"inputs": "x", "parameters": {"max_new_tokens": "5"}}, "parameters.max_new_tokens"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens"),
        ({"inputs": "x", "parameters": {"max_new_tokens": -3}}, "parameters.max_new_tokens"),
        ({"inputs": "x", "parameters": {"do_sample": 1}}, "parameters.do_sample"),
        ({"inputs": "x", "parameters": {"temperature": "hot"}}, "parameters.temperature"),
        ({"inputs": "x", "parameters": {"temperature": -1.0}}, "parameters.temperature"),
        ({"inputs": "x", "parameters": {"top_p": 1.5}}, "parameters.top_p"),
        ({"inputs": "x", "parameters": {"top_k": -1}}, "parameters.top_k"),
        ({"inputs": "x", "parameters": {"seed": -1}}, "parameters.seed"),
        ({"inputs": "x", "parameters": {"stop": [1]}}, "parameters.stop.0"),
        ({"inputs": "x", "parameters": {"stop_sequences": [""]}}, "parameters.stop_sequences"),
        ({"inputs": "x", "parameters": {"stop_token_ids": ["a"]}}, "parameters.stop_token_ids.0"),
        ({"inputs": "x", "parameters": {"output_formatter": "xml"}}, "parameters.output_formatter"),
        ({"inputs": "x", "parameters": {"n": 2}}, "parameters.n"),
        ({"inputs": "x", "parameters": {"best_of": 3}}, "parameters.best_of"),
        ({"inputs": "x", "parameters": {"num_beams": 4}}, "parameters.num_beams"),
        ({"inputs": "x", "parameters": {"top_n_tokens": 50}}, "parameters.top_n_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content.0.type"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 500.0}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_bad_requests_name_their_field(body, field):
    with pytest.raises(InvalidRequest) as e:
        parse_request(body if isinstance(body, dict) else body.encode())
    assert e.value.field == field, e.value


@pytest.mark.parametrize(("formatter", "compat"), [("json", True), ("sse", True), ("jsonlines", False)])
def test_tgi_compat_applies_to_json_and_sse_only(formatter, compat):
    """DJL v0.28.0 engines/python/setup/djl_python/request.py: only the json and sse formatters
    get ``tgi_compat`` (and with it ``details`` on by default); jsonlines keeps LMI's shape."""
    req = parse_request({"inputs": "x", "parameters": {"output_formatter": formatter}}, tgi_compat=True)
    assert req.tgi_compat is compat and req.details is compat
