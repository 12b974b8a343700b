"""``djl-serve`` as a subprocess, driven by the real ``openai`` and ``text_generation`` clients.

Greedy text over HTTP must equal the engine's offline ``generate`` on the same model.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from text_generation import Client  # installed --no-deps by `make install-test`

from djl_python.api.chat import render_chat
from tests.serving.http_server import metric_value

PROMPT = "The quick brown fox"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}]


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_route_names_the_served_model(oai):
    assert [m.id for m in oai.models.list().data] == ["tiny"]


def test_completion_greedy_matches_offline(oai, offline):
    expected = offline(PROMPT, 8)
    resp = oai.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
    assert resp.choices[0].text == expected.text
    assert resp.usage.completion_tokens == len(expected.token_ids)
    assert resp.usage.prompt_tokens == expected.prompt_tokens
    assert resp.choices[0].finish_reason == ("length" if expected.finish_reason == "length" else "stop")


def test_completion_stream_concatenates_to_offline_text(oai, offline):
    expected = offline(PROMPT, 8)
    chunks = list(oai.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason is not None
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_matches_offline_and_streams_usage_last(oai, offline):
    expected = offline(render_chat(offline.tokenizer, MESSAGES), 6)
    resp = oai.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, temperature=0)
    assert resp.choices[0].message.content == expected.text
    assert resp.choices[0].message.role == "assistant"

    chunks = list(oai.chat.completions.create(
        model="tiny", messages=MESSAGES, max_completion_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == len(expected.token_ids)
    assert all(c.usage is None for c in body)
    assert "".join(c.choices[0].delta.content or "" for c in body) == expected.text
    assert body[0].choices[0].delta.role == "assistant"


def test_chat_logprobs_report_the_greedy_token_as_the_most_likely(oai):
    resp = oai.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0.0
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs), abs=1e-4)


def test_stop_sequence_cuts_the_text(oai, offline):
    text = offline(PROMPT, 12).text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    resp = oai.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop])
    assert resp.choices[0].text == text[: text.index(stop)]
    assert resp.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(oai):
    def sample():
        return oai.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=1.0, seed=7,
                                      top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5).choices[0].text

    assert sample() == sample()


@pytest.mark.parametrize("route,body,param", [
    ("/v1/chat/completions", {"messages": MESSAGES, "n": 2}, "n"),
    ("/v1/completions", {"prompt": PROMPT, "best_of": 3}, "best_of"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": "5"}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "frobnicate": True}, "frobnicate"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "fox " * 200}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "fox " * 200}]}, "messages"),
    ("/v1/chat/completions", {"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools.0.function"),
    ("/v1/chat/completions", {"messages": MESSAGES, "tools": []}, "tools"),
    ("/v1/completions", {"prompt": PROMPT, "structured_outputs": {"choice": []}}, "structured_outputs.choice"),
])
def test_openai_bad_requests_are_400_naming_the_field(server, route, body, param):
    resp = httpx.post(server.url + route, json={"model": "tiny", **body}, timeout=30)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_openai_client_raises_bad_request(oai):
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="tiny", messages=MESSAGES, n=2)


def test_malformed_json_is_400(server):
    for route in ("/v1/completions", "/generate", "/invocations"):
        resp = httpx.post(server.url + route, content=b"{not json", headers={"content-type": "application/json"})
        assert resp.status_code == 400, (route, resp.text)
        assert "body" in resp.text


def test_tgi_client_generate_matches_offline(server, offline):
    expected = offline(PROMPT, 8)
    resp = Client(server.url, timeout=60).generate(PROMPT, max_new_tokens=8, decoder_input_details=True)
    assert resp.generated_text == expected.text
    details = resp.details
    assert details.generated_tokens == len(expected.token_ids)
    assert [t.id for t in details.tokens] == expected.token_ids
    assert "".join(t.text for t in details.tokens) == expected.text
    assert all(t.logprob is not None and t.logprob <= 0 for t in details.tokens)
    assert len(details.prefill) == expected.prompt_tokens


def test_tgi_client_stream_matches_offline(server, offline):
    expected = offline(PROMPT, 8)
    events = list(Client(server.url, timeout=60).generate_stream(PROMPT, max_new_tokens=8))
    assert [e.token.id for e in events] == expected.token_ids
    assert all(e.generated_text is None for e in events[:-1])
    assert events[-1].generated_text == expected.text
    assert events[-1].details.generated_tokens == len(expected.token_ids)


def test_tgi_generate_route_returns_one_object_and_info(server, offline):
    expected = offline(PROMPT, 5)
    body = httpx.post(f"{server.url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}},
                      timeout=60).json()
    assert body == {"generated_text": expected.text}
    info = httpx.get(f"{server.url}/info").json()
    assert info["max_total_tokens"] == 128 and info["max_batch_size"] == 4 and info["model_device_type"] == "cpu"


def test_tgi_unsupported_option_is_400(server):
    resp = httpx.post(f"{server.url}/generate",
                      json={"inputs": PROMPT, "parameters": {"best_of": 2, "do_sample": True}})
    assert resp.status_code == 400
    assert resp.json()["error_type"] == "validation" and "best_of" in resp.json()["error"]


def test_metrics_count_requests_and_tokens(server):
    before = httpx.get(f"{server.url}/metrics").text
    resp = httpx.post(f"{server.url}/v1/completions",
                      json={"model": "tiny", "prompt": PROMPT, "max_tokens": 5, "temperature": 0}, timeout=60)
    usage = resp.json()["usage"]
    httpx.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": PROMPT, "n": 3})
    after = httpx.get(f"{server.url}/metrics").text

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("djl_http_requests_total", route="/v1/completions", code="200") == 1
    assert delta("djl_http_requests_total", route="/v1/completions", code="400") == 1
    assert delta("djl_generation_tokens_total") == usage["completion_tokens"]
    assert delta("djl_prompt_tokens_total") == usage["prompt_tokens"]
    assert delta("djl_time_to_first_token_seconds_count") == 1
    assert delta("djl_e2e_request_latency_seconds_count") == 1
    assert metric_value(after, "djl_num_requests_running") == 0
