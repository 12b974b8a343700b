"""The prefix cache over HTTP: a chat's second turn reuses the first turn's KV (``/metrics`` says
how much), and its text is what the engine computes without the cache."""

from __future__ import annotations

import httpx

from tests.serving.http_server import metric_value

SYSTEM = "You are a terse assistant who answers about foxes and dogs."  # the tiny server has 128 positions


def test_second_turn_hits_the_cache_and_answers_as_without_it(server, offline):
    def metrics() -> str:
        return httpx.get(server.url + "/metrics", timeout=10).text

    before = metrics()
    turn1 = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}]
    first = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                       json={"messages": turn1, "max_tokens": 6, "temperature": 0}).json()
    answer = first["choices"][0]["message"]["content"]
    turn2 = turn1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And Paris?"}]
    second = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                        json={"messages": turn2, "max_tokens": 6, "temperature": 0}).json()
    after = metrics()
    hits = metric_value(after, "djl_prefix_cache_hits_total") - metric_value(before, "djl_prefix_cache_hits_total")
    queried = (metric_value(after, "djl_prefix_cache_queries_total")
               - metric_value(before, "djl_prefix_cache_queries_total"))
    prompt_tokens = first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert queried == prompt_tokens
    assert hits >= 16 and hits <= first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert 0 < metric_value(after, "djl_prefix_cache_hit_rate") <= 1
    from djl_python.api.chat import render_chat

    expected = offline(render_chat(offline.tokenizer, turn2), 6)  # an engine of its own, no shared history
    assert second["choices"][0]["message"]["content"] == expected.text
