"""One chat body, three doors: ``/invocations``, ``/v1/chat/completions`` and the DJL handler.

All three validate chat bodies with ``djl_python.api.openai.ChatCompletionRequest``
and render the prompt with ``djl_python.api.chat.render_chat``, so the same body
must get the same verdict (status and offending field) and, when valid, the same
text. The served model name is the same rule on both transports, too.
"""

from __future__ import annotations

import json

import httpx
import pytest

from djl_python import transformers_neuronx as tnx
from djl_python.config import load_config
from djl_python.loader import load_engine
from tests.serving.djl_java import JavaRollingBatch, http_input, in_process

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]}]
GOOD = {"messages": MESSAGES, "max_tokens": 6, "temperature": 0}
BAD = [  # (body, the field every door must name)
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": "user", "content": "x", "colour": "red"}]}, "messages.0.colour"),
    ({**GOOD, "max_tokens": 0}, "max_tokens"),
    ({**GOOD, "n": 2}, "n"),
    ({**GOOD, "top_logprobs": 2}, "top_logprobs"),
    ({**GOOD, "tools": [{"type": "function"}]}, "tools.0.function"),
    ({**GOOD, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),  # auto needs a parser
    ({**GOOD, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema"),
    ({**GOOD, "frobnicate": True}, "frobnicate"),
]


@pytest.fixture(scope="module")
def djl(model_dir):
    """The DJL handler on the same model folder (and so the same serving.properties) as the server."""
    config = load_config(model_dir=str(model_dir), properties={
        "rolling_batch": "auto", "device": "cpu", "max_rolling_batch_size": "4", "n_positions": "128",
        "model_dir": str(model_dir)})
    svc = tnx.TransformersNeuronXService()
    svc.initialize({"model_dir": str(model_dir), "rolling_batch": "auto"}, engine=load_engine(config), config=config)
    return svc


def djl_chat(svc, body):
    done = JavaRollingBatch(in_process(svc.handle, "0.28.0"), "0.28.0").run({0: [("r", http_input(json.dumps(body)))]})
    return done["r"]


def http_field(resp) -> str:
    body = resp.json()
    return body["error"]["param"] if "error" in body else body["param"]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_the_same_bad_chat_body_gets_the_same_400_everywhere(server, djl, body, field):
    lmi = httpx.post(server.url + "/invocations", json=body, timeout=60)
    oai = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert (lmi.status_code, http_field(lmi)) == (400, field), lmi.text
    assert (oai.status_code, http_field(oai)) == (400, field), oai.text
    # DJL's own handler fails a request of a rolling batch with 424 (see djl_python.djl.records);
    # the field named is the same as over HTTP.
    error = djl_chat(djl, body).error
    assert error is not None and error["code"] == 424 and error["error"].startswith(field + ":"), error


def test_the_same_chat_body_gives_the_same_text_everywhere(server, djl):
    lmi = httpx.post(server.url + "/invocations", json=GOOD, timeout=60)
    oai = httpx.post(server.url + "/v1/chat/completions", json=GOOD, timeout=60)
    dj = json.loads(djl_chat(djl, GOOD).text)
    texts = [doc["choices"][0]["message"]["content"] for doc in (lmi.json(), oai.json(), dj)]
    assert texts[0] and texts[0] == texts[1] == texts[2]
    usages = [doc["usage"] for doc in (lmi.json(), oai.json(), dj)]
    assert usages[0] == usages[1] == usages[2]


def test_http_and_djl_serve_the_same_model_name(server, djl):
    listed = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
    dj = json.loads(djl_chat(djl, GOOD).text)
    assert dj["model"] == listed
    lmi = httpx.post(server.url + "/invocations", json=GOOD, timeout=60).json()
    assert lmi["model"] == listed
    assert httpx.post(f"{server.url}/predictions/{listed}", json=GOOD, timeout=60).status_code == 200
