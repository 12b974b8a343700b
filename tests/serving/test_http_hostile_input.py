"""Hostile request bodies on every POST route of the shared server.

Non-finite and extreme sampling numbers, deeply nested JSON and lone UTF-16 surrogates each
get a 4xx whose message names the field, never a 500 or a stream cut mid-way; valid extremes
(a tiny temperature, the smallest repetition penalty) generate with strictly valid JSON.
"""

from __future__ import annotations

import json

import httpx
import pytest

ROUTES = {  # route -> (a valid body, where sampling parameters go: None = top level)
    "/invocations": ({"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, "parameters"),
    "/predictions/tiny": ({"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, "parameters"),
    "/v1/completions": ({"prompt": "Hello", "max_tokens": 3}, None),
    "/v1/chat/completions": ({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}, None),
    "/generate": ({"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, "parameters"),
    "/generate_stream": ({"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, "parameters"),
    "/": ({"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, "parameters"),
}
# Sent as raw JSON text: Python's json (and so the server) reads NaN / Infinity literals.
BAD_NUMBERS = [("temperature", "NaN"), ("temperature", "Infinity"), ("repetition_penalty", "NaN"),
               ("repetition_penalty", "Infinity"), ("repetition_penalty", "1e-300"), ("repetition_penalty", "0"),
               ("top_p", "NaN"), ("frequency_penalty", "-Infinity"), ("temperature", "1e308")]


def _raw(route: str, name: str, literal: str) -> str:
    body, where = ROUTES[route]
    body = json.loads(json.dumps(body))
    target = body.setdefault(where, {}) if where else body
    target[name] = "@@"
    return json.dumps(body).replace('"@@"', literal)


def _message(resp: httpx.Response) -> str:
    return resp.text  # every API's error body carries the field name in its message


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize(("name", "literal"), BAD_NUMBERS)
def test_non_finite_and_absurd_numbers_are_400_naming_the_field(server, route, name, literal):
    resp = httpx.post(server.url + route, content=_raw(route, name, literal),
                      headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert name in _message(resp), resp.text


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_deeply_nested_json_is_400_not_a_recursion_error(server, route):
    deep = '{"inputs": "Hello", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = httpx.post(server.url + route, content=deep, headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert "nested" in resp.text


LMI_ROUTES = {"/invocations", "/predictions/tiny"}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_moderately_nested_unknown_field_is_400_naming_it_or_ignored_on_lmi(server, route):
    """OpenAI and TGI refuse an unknown field by name; LMI ignores unknown keys, as DJL does, and
    so never looks inside them: their value cannot break anything that follows."""
    body, _ = ROUTES[route]
    raw = json.dumps(body)[:-1] + ', "metadata": ' + "[" * 40 + "]" * 40 + "}"
    resp = httpx.post(server.url + route, content=raw, headers={"content-type": "application/json"}, timeout=60)
    if route in LMI_ROUTES:
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 400 and "metadata" in resp.text, resp.text


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/generate"])
def test_moderately_nested_free_form_value_is_400_naming_it(server, route):
    """A declared free-form field (OpenAI tool parameters, a TGI grammar) is walked: nesting
    deeper than the limit is refused by the field's name."""
    nested = "[" * 40 + "]" * 40
    if route == "/generate":
        schema = '{"a": ' * 40 + "1" + "}" * 40  # a JSON-schema grammar's value is an object
        raw = '{"inputs": "Hello", "parameters": {"max_new_tokens": 3, "grammar": {"type": "json", "value": %s}}}' % schema
        field = "parameters"
    else:
        raw = ('{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "tools": [{"type": "function", '
               '"function": {"name": "f", "parameters": {"x": %s}}}]}' % nested)
        field = "tools"
    resp = httpx.post(server.url + route, content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400 and field in resp.text and "nested" in resp.text, resp.text


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_lone_surrogate_in_the_prompt_is_400_naming_the_field(server, route):
    body, _ = ROUTES[route]
    raw = json.dumps(body).replace("Hello", "Hel\\ud800lo")
    resp = httpx.post(server.url + route, content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400, (resp.status_code, resp.text)
    field = {"/v1/completions": "prompt", "/v1/chat/completions": "messages.0.content"}.get(route, "inputs")
    assert field in resp.text and "surrogate" in resp.text


def test_a_lone_surrogate_in_an_echoed_field_never_cuts_a_stream(server):
    """``stop`` strings and the model name are echoed or matched; refused before any byte is sent."""
    raw = json.dumps({"inputs": "Hello", "stream": True, "parameters": {"max_new_tokens": 3, "stop": ["@@"]}})
    resp = httpx.post(server.url + "/invocations", content=raw.replace("@@", "\\udfff"),
                      headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400 and "parameters.stop.0" in resp.text, resp.text


def _strict_json_lines(text: str) -> list:
    """Every JSON value in a jsonlines / SSE body, parsed strictly (NaN and Infinity refused)."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    values = []
    for line in text.splitlines():
        line = line.removeprefix("data:").strip()
        if line and line != "[DONE]":
            values.append(json.loads(line, parse_constant=refuse))
    return values


@pytest.mark.parametrize("params", [{"temperature": 1e-40, "do_sample": True},
                                    {"repetition_penalty": 0.01, "do_sample": True},
                                    {"repetition_penalty": 100.0}])
def test_extreme_valid_values_generate_strictly_valid_json_with_finite_logprobs(server, params):
    body = {"inputs": "Hello", "stream": True,
            "parameters": {"max_new_tokens": 4, "details": True, "top_n_tokens": 5, **params}}
    resp = httpx.post(server.url + "/invocations", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    lines = _strict_json_lines(resp.text)
    assert lines and all("error" not in line for line in lines), resp.text
    logprobs = [line["token"]["log_prob"] for line in lines if line.get("token")]
    assert logprobs and all(lp <= 0.0 for lp in logprobs)
    # TGI and OpenAI with log-probs, the same extremes
    tgi = httpx.post(server.url + "/generate", json={"inputs": "Hello", "parameters": {
        "max_new_tokens": 4, "details": True, "top_n_tokens": 5, **{k: v for k, v in params.items()}}}, timeout=60)
    assert tgi.status_code == 200, tgi.text
    json.loads(tgi.text, parse_constant=lambda t: (_ for _ in ()).throw(ValueError(t)))
    oai_params = {k: v for k, v in params.items() if k != "do_sample"}
    oai = httpx.post(server.url + "/v1/completions", json={"prompt": "Hello", "max_tokens": 4, "logprobs": 5,
                                                          "stream": True, **oai_params}, timeout=60)
    assert oai.status_code == 200 and _strict_json_lines(oai.text), oai.text


def test_the_default_body_limit_follows_n_positions_with_a_4_mib_floor(server):
    from djl_python.config.serving import default_max_request_bytes

    assert default_max_request_bytes(128) == 4 * 2**20 and default_max_request_bytes(131072) == 256 * 131072
    raw = json.dumps({"inputs": "x" * (4 * 2**20)})
    resp = httpx.post(server.url + "/generate", content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 413 and str(4 * 2**20) in resp.text and resp.json()["error_type"] == "validation"


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_an_integer_of_too_many_digits_is_400_not_a_500(server, route):
    """Python refuses to convert an integer literal of over 4,300 digits (a ValueError that is
    not a JSONDecodeError): a 400 on the body, not a 500 with a traceback."""
    body, where = ROUTES[route]
    raw = json.dumps(body)[:-1] + ', "x": ' + "9" * 5000 + "}"
    resp = httpx.post(server.url + route, content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert "body" in resp.text and "digits" in resp.text, resp.text[:300]


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/csv", "multipart/form-data",
                                          "text/plain"])
def test_a_body_type_the_route_does_not_read_is_415(server, route, content_type):
    """The JSON body is sent as is, under another Content-Type: the route says it does not read
    that type (LMI's routes read text/plain as the prompt) instead of parsing it as JSON."""
    body, _ = ROUTES[route]
    resp = httpx.post(server.url + route, content=json.dumps(body), headers={"content-type": content_type},
                      timeout=60)
    lmi_plain_text = content_type == "text/plain" and route in ("/invocations", "/predictions/tiny")
    if lmi_plain_text:
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 415, (resp.status_code, resp.text)
        assert content_type in resp.text and "application/json" in resp.text


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8", "application/vnd.api+json"])
def test_json_under_any_json_type_or_none_is_read(server, route, content_type):
    body, _ = ROUTES[route]
    headers = {} if content_type is None else {"content-type": content_type}
    resp = httpx.post(server.url + route, content=json.dumps(body).encode(), headers=headers, timeout=60)
    assert resp.status_code == 200, (resp.status_code, resp.text)
