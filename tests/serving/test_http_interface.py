"""The interface vLLM and TGI users expect, over HTTP on the tiny-model server.

References (read, not copied): vLLM's OpenAI server, vllm-project/vllm
``vllm/entrypoints/openai/serving_engine.py`` (``_check_model``: a ``model`` outside the
served names is ``404 "The model `X` does not exist."``; ``show_available_models``: each card
carries ``max_model_len``) and ``vllm/entrypoints/openai/protocol.py`` (``ModelCard.created``,
the sampling fields ``top_k``/``min_p``/``min_tokens``/``skip_special_tokens``, ``echo``,
``user``); vLLM and TGI both answer ``GET /health`` (200 ready, 503 otherwise) and vLLM
``GET /version``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from djl_python.config import load_config
from djl_python.serving.app import _version, create_app
from djl_python.serving.security import install_security
from tests.serving.http_server import idle, metric_value, slow_loading_client, wait_for

PROMPT = "The quick brown fox"
POST_ROUTES = ("/invocations", "/predictions/{model}", "/v1/completions", "/v1/chat/completions", "/generate",
               "/generate_stream", "/")


def test_health_and_version(server):
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json() == {"status": "healthy"}
    version = httpx.get(f"{server.url}/version")
    assert version.status_code == 200 and version.json() == {"version": _version()} and _version()


def test_health_is_503_while_loading_and_version_answers(tiny_llama):
    with slow_loading_client(tiny_llama) as (client, release):
        loading = client.get("/health")
        assert loading.status_code == 503 and "loading" in loading.json()["message"]
        assert client.get("/version").status_code == 200
        assert client.get("/v1/models").json()["data"][0]["max_model_len"] is None
        release.set()
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/v1/models").json()["data"][0]["max_model_len"] == 64


def test_health_after_a_failed_load_is_503(tiny_llama):
    config = load_config(tiny_llama, properties={"device": "cpu"}, env={})

    def broken(cfg):
        raise RuntimeError("no weights")

    with TestClient(create_app(config, broken)) as client:
        deadline = time.monotonic() + 30
        while "failed" not in client.get("/health").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get("/health").status_code == 503


def test_health_and_version_need_no_api_key(tiny_llama):
    config = load_config(tiny_llama, properties={"device": "cpu", "api_key": "k3y"}, env={})
    app = create_app(config, lambda cfg: threading.Event().wait(60))
    install_security(app, config)
    client = TestClient(app)  # no lifespan: nothing loads
    assert client.get("/version").status_code == 200
    assert client.get("/health").status_code == 503  # open, and honest: not loaded
    assert client.get("/v1/models").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/metrics").status_code == 401  # docs/deployment.md: a scraper needs the token
    assert client.get("/metrics", headers={"Authorization": "Bearer k3y"}).status_code == 200


def test_openapi_documents_every_post_body(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def resolve(node):
        return [schemas[ref["$ref"].rsplit("/", 1)[1]] for ref in node.get("anyOf", [node])]

    for route in POST_ROUTES:
        body = doc["paths"][route]["post"]["requestBody"]
        models = resolve(body["content"]["application/json"]["schema"])
        assert models and all(m["type"] == "object" and m["properties"] for m in models), route
    completion = schemas["CompletionRequest"]
    assert {"prompt", "max_tokens", "min_p", "min_tokens", "echo", "user"} <= set(completion["properties"])
    assert completion["required"] == ["prompt"] and completion["additionalProperties"] is False
    assert "messages" in schemas["ChatCompletionRequest"]["required"]
    assert "inputs" in schemas["TgiRequest"]["required"]
    assert "text/plain" in doc["paths"]["/invocations"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize("route,body,param", [
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/generate", {"inputs": "x", "parameters": {"top_k": "3"}}, "parameters.top_k"),
])
def test_documented_bodies_keep_our_400_naming_the_field(server, route, body, param):
    resp = httpx.post(server.url + route, json=body, timeout=30)
    assert resp.status_code == 400, resp.text  # not FastAPI's 422
    assert param in resp.text


def test_models_carry_created_and_max_model_len(server):
    before = time.time()
    card = httpx.get(f"{server.url}/v1/models").json()["data"][0]
    assert card["id"] == "tiny" and card["object"] == "model"
    assert card["max_model_len"] == 128  # SERVER_OPTIONS n_positions
    assert isinstance(card["created"], int) and 1_600_000_000 < card["created"] <= before
    assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["created"] == card["created"]


@pytest.mark.parametrize("route,body", [
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
])
def test_unknown_model_is_404_listing_the_served_names(server, route, body):
    resp = httpx.post(server.url + route, json={**body, "model": "gpt-4"}, timeout=30)
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["param"] == "model" and "gpt-4" in error["message"] and "'tiny'" in error["message"]
    assert httpx.post(server.url + route, json={**body, "model": "tiny"}, timeout=60).status_code == 200
    assert httpx.post(server.url + route, json=body, timeout=60).status_code == 200  # model is optional


def completion(server, **body):
    resp = httpx.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "temperature": 0, **body}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_neutral_openai_fields_are_accepted_and_change_nothing(server, offline):
    expected = offline(PROMPT, 6).text
    neutral = {"user": "u-1", "store": False, "metadata": {"team": "a"}, "service_tier": "auto", "best_of": 1,
               "top_k": -1, "skip_special_tokens": True, "min_tokens": 0, "min_p": 0.0}
    assert completion(server, max_tokens=6, **neutral)["choices"][0]["text"] == expected
    chat = {k: v for k, v in neutral.items() if k != "best_of"}
    resp = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **chat})
    assert resp.status_code == 200, resp.text


def test_top_k_minus_one_disables_top_k(server):
    # Seeded sampling with top_k=-1 draws from the whole vocabulary, exactly as top_k unset (0).
    sample = {"temperature": 1.0, "seed": 11, "max_tokens": 8}
    assert completion(server, top_k=-1, **sample)["choices"][0]["text"] == \
        completion(server, top_k=0, **sample)["choices"][0]["text"]


def test_min_p_one_keeps_only_the_top_token(server, offline):
    # min_p=1 keeps only tokens as likely as the most likely one: sampling becomes greedy.
    expected = offline(PROMPT, 8).text
    for seed in (1, 2):
        assert completion(server, temperature=1.5, seed=seed, min_p=1.0, max_tokens=8)["choices"][0]["text"] == \
            expected


def test_min_tokens_holds_off_a_stop_sequence(server, offline):
    text = offline(PROMPT, 8).text
    stop = text[:2]
    early = completion(server, max_tokens=8, stop=[stop])
    assert early["choices"][0]["text"] == "" and early["choices"][0]["finish_reason"] == "stop"
    held = completion(server, max_tokens=8, stop=[stop], min_tokens=8)
    assert held["usage"]["completion_tokens"] == 8 and held["choices"][0]["text"].startswith(stop)


def test_min_tokens_above_max_tokens_is_400(server):
    resp = httpx.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "min_tokens": 3})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "min_tokens"


def test_echo_leads_with_the_prompt(server, offline):
    expected = offline(PROMPT, 5)
    whole = completion(server, max_tokens=5, echo=True)
    assert whole["choices"][0]["text"] == PROMPT + expected.text
    ids = offline.tokenizer.encode(PROMPT)
    by_ids = completion(server, prompt=ids, max_tokens=5, echo=True)
    assert by_ids["choices"][0]["text"] == offline.tokenizer.decode(ids) + expected.text
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60,
                      json={"prompt": PROMPT, "max_tokens": 5, "temperature": 0, "echo": True, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["text"].startswith(PROMPT)
    assert "".join(e["choices"][0]["text"] for e in events) == PROMPT + expected.text


def test_echo_with_logprobs_is_refused(server):
    resp = httpx.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "echo": True, "logprobs": 1})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "echo"


def test_a_list_of_prompts_gets_one_choice_each(server, offline):
    prompts = [PROMPT, "Hello world", "Once upon a time"]
    expected = [offline(p, 4) for p in prompts]
    body = completion(server, prompt=prompts, max_tokens=4)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["text"] for c in body["choices"]] == [e.text for e in expected]
    assert body["usage"]["prompt_tokens"] == sum(e.prompt_tokens for e in expected)
    assert body["usage"]["completion_tokens"] == sum(len(e.token_ids) for e in expected)
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60, json={
            "prompt": prompts, "max_tokens": 4, "temperature": 0, "stream": True, "echo": True,
            "stream_options": {"include_usage": True}}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    *chunks, usage = events
    texts = ["", "", ""]
    for chunk in chunks:
        texts[chunk["choices"][0]["index"]] += chunk["choices"][0]["text"]
    assert texts == [p + e.text for p, e in zip(prompts, expected)]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == body["usage"]["completion_tokens"]
    finals = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finals) == [0, 1, 2]


@pytest.mark.parametrize("prompt,param", [
    ([PROMPT, ""], "prompt.1"),
    ([PROMPT] * 17, "prompt"),
    ([PROMPT, "fox " * 200], "prompt"),  # the second does not fit n_positions: the whole request is refused
])
def test_bad_prompt_lists_are_400(server, prompt, param):
    resp = httpx.post(f"{server.url}/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=60)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text


def finished(text: str, reason: str) -> float:
    return metric_value(text, "djl_request_finished_total", finish_reason=reason)


def _leave_mid_generation(server, body: dict, stream: bool) -> None:
    """Send ``body``, wait until the server is generating it, then close the connection."""
    if stream:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
            next(line for line in r.iter_lines() if line.startswith("data: {"))
        return
    url = urlparse(server.url)
    raw = json.dumps(body).encode()
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        wait_for(server, lambda t: metric_value(t, "djl_num_requests_running") >= 3)  # all three generating


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_a_prompt_list_aborts_every_prompt(server, stream):
    """The client leaves once all three prompts are generating (seen on /metrics, not guessed by a
    client timeout). Should the prompts finish before the server sees it leave (a fast machine can
    generate their tokens first), nothing was left to abort and the attempt is repeated; a server
    that never aborts fails every attempt."""
    body = {"prompt": [PROMPT, "Hello world", "Once upon a time"], "max_tokens": 110, "ignore_eos": True,
            "temperature": 0, "stream": stream}
    outcomes = []
    for _ in range(5):
        before = wait_for(server, idle)
        _leave_mid_generation(server, body, stream)
        after = wait_for(server, idle)
        outcome = (finished(after, "abort") - finished(before, "abort"),
                   finished(after, "length") - finished(before, "length"))
        outcomes.append(outcome)
        if outcome == (3, 0):
            return
        assert outcome[0] + outcome[1] == 3, outcomes
    pytest.fail(f"the prompts of a departed client were not all aborted: (aborted, finished) {outcomes}")


def test_a_404_for_an_unknown_model_never_shows_the_servers_path(tiny_llama):
    """A model configured by its absolute path is served under its folder name; the 404 for
    another name lists that name, not the path (which stays an accepted alias)."""
    from djl_python.loader import load_engine

    config = load_config(properties={"model_id": str(tiny_llama), "device": "cpu", "max_rolling_batch_size": "1",
                                     "n_positions": "64"}, env={})
    with TestClient(create_app(config, load_engine)) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = {"prompt": PROMPT, "max_tokens": 1}
        resp = client.post("/v1/completions", json={**body, "model": "gpt-4"})
        assert resp.status_code == 404, resp.text
        assert str(tiny_llama) not in resp.text and repr(tiny_llama.name) in resp.json()["error"]["message"]
        assert client.post("/v1/completions", json={**body, "model": str(tiny_llama)}).status_code == 200


def test_stop_token_ids_end_an_openai_request_as_in_vllm(server):
    """vLLM's extra field: generation ends at the first of these ids, finish_reason "stop", the
    id's text not shown; ids outside [0, 2^31) are a 400 naming the field, on both routes."""
    generated = httpx.post(server.url + "/generate", json={"inputs": PROMPT, "parameters": {
        "max_new_tokens": 12, "details": True}}, timeout=60)
    assert generated.status_code == 200, generated.text
    ids = [t["id"] for t in generated.json()["details"]["tokens"]]
    fourth = ids[3]
    first_at = ids.index(fourth)  # the id may occur earlier too: generation stops at its first
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    free = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]
    resp = httpx.post(server.url + "/v1/completions", json=body | {"stop_token_ids": [fourth]}, timeout=60).json()
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "stop" and resp["usage"]["completion_tokens"] == first_at + 1
    assert free["text"].startswith(choice["text"]) and len(choice["text"]) < len(free["text"])
    chat = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    assert httpx.post(server.url + "/v1/chat/completions", json=chat | {"stop_token_ids": [fourth]},
                      timeout=60).status_code == 200
    for route, valid in (("/v1/completions", body), ("/v1/chat/completions", chat)):
        bad = httpx.post(server.url + route, json=valid | {"stop_token_ids": [2**31]}, timeout=60)
        assert bad.status_code == 400 and "stop_token_ids" in bad.text, bad.text


def test_a_server_logging_to_a_file_draws_no_progress_bars(server):
    """tqdm's carriage-return redraws make one ever-growing line in a log file; a server whose
    stderr is not a terminal turns the bars off (its model load drew "Loading weights" bars)."""
    logs = server.logs()
    assert "backend=pytorch" in logs  # the load was logged
    assert "\r" not in logs and "it/s]" not in logs


def test_progress_bars_stay_on_a_terminal_and_go_off_elsewhere():
    import io

    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    from djl_python.progress import progress_bars_for

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    transformers_logging.enable_progress_bar()  # a known start: in-process entry points ran earlier
    enable_progress_bars()
    try:
        assert progress_bars_for(Terminal()) and transformers_logging.is_progress_bar_enabled()
        assert not progress_bars_for(io.StringIO())
        assert not transformers_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    finally:
        transformers_logging.enable_progress_bar()
        enable_progress_bars()
