"""A bounded schemathesis run against ``djl-serve``'s own OpenAPI document.

schemathesis reads ``/openapi.json`` from a real server (tiny model, 127.0.0.1)
and sends valid and invalid bodies to every documented operation. Every answer
must be below 500, and every body we send back must be valid JSON (a JSON
document, or JSON on every ``data:`` / JSON-lines line of a stream). The run is
bounded in examples and in time (``BUDGET_S``), without shrinking, so it stays
a few seconds of ``make test``.
"""

from __future__ import annotations

import json
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from schemathesis import GenerationMode

from tests.serving.http_server import model_folder, start_server

MAX_EXAMPLES = 200
BUDGET_S = 25.0  # generation stops sending requests after this; the test stays well under 60 s
# Cases that reach other engineers' open work (NaN / huge numbers, nested
# JSON, lone surrogates) are listed here when they are known to 5xx; empty means none is known.
KNOWN_5XX: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server(tiny_llama, tmp_path_factory):
    folder = model_folder(tiny_llama, tmp_path_factory.mktemp("fuzz") / "tiny",
                          {"device": "cpu", "max_rolling_batch_size": 4, "n_positions": 48,
                           "max_waiting_requests": 16})
    srv = start_server(folder, tmp_path_factory.mktemp("logs") / "fuzz.log")
    yield srv
    srv.stop()


def json_problem(content_type: str, text: str) -> str | None:
    """Why ``text`` is not valid JSON for its content type, or None."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            json.loads(text)
        elif kind == "text/event-stream":
            for line in text.splitlines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    json.loads(line[5:])
        elif kind == "application/jsonlines":
            for line in text.splitlines():
                if line.strip():
                    json.loads(line)
    except ValueError as err:
        return f"{kind} body is not valid JSON: {err}"
    return None


def test_schemathesis_finds_no_5xx_and_only_valid_json(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    deadline = time.monotonic() + BUDGET_S
    seen: dict[str, int] = {}
    accepted: set[str] = set()  # operations that answered 2xx: the documented bodies are real ones

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=fuzz_server.url, timeout=30)
        label = f"{case.method} {case.path}"
        seen[label] = seen.get(label, 0) + 1
        if response.status_code < 300:
            accepted.add(label)
        where = f"{label} body={case.body!r:.300} -> {response.status_code} {response.text[:300]!r}"
        if response.status_code >= 500:
            assert label in KNOWN_5XX, f"server error: {where}"
        content_type = response.headers.get("content-type") or [""]  # schemathesis: a list per header
        problem = json_problem(content_type[0] if isinstance(content_type, list) else content_type, response.text)
        assert problem is None, f"{problem}: {where}"

    started = time.monotonic()
    check()
    print(f"schemathesis: {sum(seen.values())} requests in {time.monotonic() - started:.1f}s: {seen}; "
          f"2xx from {sorted(accepted)}")
    assert sum(seen.values()) >= 20, seen  # it really exercised the server
    posts = {label for label in seen if label.startswith("POST")}
    assert len(posts) >= 5, seen  # most documented POST operations were reached
    # Bodies generated from the document were accepted by most POST routes: it describes them.
    assert len({label for label in accepted if label.startswith("POST")}) >= 4, (accepted, seen)
