"""SageMaker ``/invocations`` and DJL ``/predictions/{model}`` over real HTTP, in every LMI output format."""

from __future__ import annotations

import json

import httpx
import pytest

from djl_python.api.chat import render_chat
from tests.serving.conftest import SERVER_OPTIONS
from tests.serving.http_server import model_folder, start_server

PROMPT = "Paris is the capital of"


def post(server, body, route="/invocations", **kw):
    return httpx.post(server.url + route, json=body, timeout=60, **kw)


def test_json_matches_offline_with_details(server, offline):
    expected = offline(PROMPT, 6)
    resp = post(server, {"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True}})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["generated_text"] == expected.text
    assert body["details"]["finish_reason"] == expected.finish_reason
    assert [t["id"] for t in body["details"]["tokens"]] == expected.token_ids


def test_plain_text_body_and_predictions_route(server, offline):
    expected = offline(PROMPT, 4)
    resp = httpx.post(f"{server.url}/predictions/tiny", content=PROMPT.encode(),
                      headers={"content-type": "text/plain"}, timeout=60)
    assert resp.status_code == 200
    assert resp.json()["generated_text"].startswith(expected.text)  # default max_new_tokens >= 4
    missing = httpx.post(f"{server.url}/predictions/other", json={"inputs": PROMPT})
    assert missing.status_code == 404 and missing.json()["param"] == "model"


def test_jsonlines_stream_ends_with_the_offline_text(server, offline):
    expected = offline(PROMPT, 6)
    with httpx.stream("POST", f"{server.url}/invocations", timeout=60,
                      json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6}, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("application/jsonlines")
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert [line["token"]["id"] for line in lines] == expected.token_ids
    assert lines[-1]["generated_text"] == expected.text
    assert "".join(line["token"]["text"] for line in lines) == expected.text


def test_sse_output_formatter(server, offline):
    expected = offline(PROMPT, 5)
    resp = post(server, {"inputs": PROMPT, "stream": True,
                         "parameters": {"max_new_tokens": 5, "output_formatter": "sse", "details": True}})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(chunk[len("data: "):]) for chunk in resp.text.split("\n\n") if chunk]
    assert events[-1]["generated_text"] == expected.text
    assert events[-1]["details"]["generated_tokens"] == len(expected.token_ids)


def test_chat_on_invocations_is_an_openai_completion(server, offline):
    messages = [{"role": "user", "content": "Hello"}]
    expected = offline(render_chat(offline.tokenizer, messages), 5)
    body = post(server, {"messages": messages, "max_tokens": 5, "temperature": 0}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == expected.text
    assert body["usage"]["completion_tokens"] == len(expected.token_ids)


@pytest.mark.parametrize("body,param", [
    ({"inputs": PROMPT, "parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens"),
    ({"inputs": PROMPT, "parameters": {"max_new_tokens": "ten"}}, "parameters.max_new_tokens"),
    ({"inputs": PROMPT, "parameters": {"n": 2}}, "parameters.n"),
    ({"inputs": "capital " * 200}, "inputs"),
    ({"parameters": {}}, "inputs"),
])
def test_bad_lmi_requests_are_400_naming_the_field(server, body, param):
    resp = post(server, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["param"] == param and param in resp.json()["message"]


def test_one_bad_request_does_not_disturb_concurrent_good_ones(server, offline):
    import concurrent.futures

    expected = offline(PROMPT, 6)
    good = {"inputs": PROMPT, "parameters": {"max_new_tokens": 6}}
    bad = {"inputs": "capital " * 200}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: post(server, b), [good, bad, good, bad]))
    assert [r.status_code for r in results] == [200, 400, 200, 400]
    assert results[0].json()["generated_text"] == results[2].json()["generated_text"] == expected.text


@pytest.fixture(scope="module")
def tgi_server(tiny_llama, tmp_path_factory):
    folder = model_folder(tiny_llama, tmp_path_factory.mktemp("tgi-compat") / "tiny",
                          {**SERVER_OPTIONS, "tgi_compat": "true"})
    srv = start_server(folder, tmp_path_factory.mktemp("logs") / "tgi-compat.log")
    yield srv
    srv.stop()


def test_tgi_compat_json_and_stream(tgi_server, offline):
    expected = offline(PROMPT, 4)
    body = post(tgi_server, {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}}).json()
    assert isinstance(body, list) and body[0]["generated_text"] == expected.text
    tokens = body[0]["details"]["tokens"]
    assert [t["id"] for t in tokens] == expected.token_ids and all("special" in t and "logprob" in t for t in tokens)

    resp = post(tgi_server, {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}, "stream": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(chunk[len("data: "):]) for chunk in resp.text.split("\n\n") if chunk]
    assert events[-1]["generated_text"] == expected.text
