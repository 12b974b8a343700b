"""LMI response formats, assembled from a sequence of engine RequestOutputs."""

from __future__ import annotations

import json

import pytest

from djl_python.engine.request import RequestOutput
from djl_python.api.lmi import CONTENT_TYPES, parse_request
from djl_python.api.lmi_render import make_formatter

PROMPT = 'Say "hi"'
PROMPT_IDS = [11, 12, 13]
# Three steps: a delta held back at step 2 (incomplete character), flushed at the end.
# Token texts are what the engine decodes for each id on its own; "<id>" here, so the
# tests can tell them from the text deltas.
def _names(top):
    return [{t: f"<{t}>" for t in top}]


STEPS = [
    RequestOutput("r1", [5], "Hel", logprobs=[-0.5], top_logprobs=[{5: -0.5, 6: -1.5}],
                  token_texts=["<5>"], top_logprob_texts=_names({5: 0, 6: 0})),
    RequestOutput("r1", [6], "", logprobs=[-0.25], top_logprobs=[{6: -0.25, 5: -2.0}],
                  token_texts=["<6>"], top_logprob_texts=_names({6: 0, 5: 0})),
    RequestOutput("r1", [2], 'lo "ü"\n', finished=True, finish_reason="eos_token", logprobs=[-0.125],
                  top_logprobs=[{2: -0.125, 7: -3.0}], prompt_tokens=3, generated_tokens=3,
                  token_texts=["<2>"], top_logprob_texts=_names({2: 0, 7: 0})),
]
TEXT = 'Hello "ü"\n'


def fmt(body: dict, **kw):
    req = parse_request(body, tgi_compat=kw.pop("tgi_compat", False))
    return make_formatter(req, request_id="r1", prompt_text=PROMPT, prompt_token_ids=PROMPT_IDS,
                          prompt_token_texts=[f"<{t}>" for t in PROMPT_IDS], special_token_ids=frozenset({2}), created=1700000000)


def run(f, steps=STEPS) -> list[str]:
    return [f.format(o) for o in steps]


def test_json_fragments_concatenate_to_the_document():
    f = fmt({"inputs": PROMPT, "parameters": {"details": True}})
    parts = run(f)
    assert parts[0] and parts[1] == "" and f.done and f.content_type == "application/json"
    doc = json.loads("".join(parts))
    assert doc == {
        "generated_text": TEXT,
        "details": {
            "finish_reason": "eos_token", "generated_tokens": 3, "inputs": PROMPT,
            "tokens": [{"id": 5, "text": "Hel", "log_prob": -0.5}, {"id": 6, "text": "", "log_prob": -0.25},
                       {"id": 2, "text": 'lo "ü"\n', "log_prob": -0.125, "special_token": True}],
        },
    }
    assert "".join(t["text"] for t in doc["details"]["tokens"]) == doc["generated_text"]


def test_json_without_details_and_return_full_text():
    doc = json.loads("".join(run(fmt({"inputs": PROMPT, "parameters": {"return_full_text": True}}))))
    assert doc == {"generated_text": PROMPT + TEXT}


def test_json_tgi_compat_is_a_list_with_tgi_keys():
    doc = json.loads("".join(run(fmt({"inputs": PROMPT, "parameters": {"seed": 4}}, tgi_compat=True))))
    assert isinstance(doc, list) and len(doc) == 1
    d = doc[0]["details"]
    assert doc[0]["generated_text"] == TEXT and d["finish_reason"] == "eos_token" and d["seed"] == 4
    assert d["prefill"] == [] and d["tokens"][0] == {"id": 5, "text": "Hel", "logprob": -0.5, "special": False}
    assert d["tokens"][2]["special"] is True
    text_generation = pytest.importorskip("text_generation")
    text_generation.types.Response(**doc[0])  # the TGI client's own schema accepts it


def test_decoder_input_details_and_top_tokens():
    doc = json.loads("".join(run(fmt({"inputs": PROMPT, "parameters": {
        "details": True, "decoder_input_details": True, "top_n_tokens": 2}}))))
    d = doc["details"]
    assert d["prefill"] == [{"id": t, "text": f"<{t}>", "log_prob": None} for t in PROMPT_IDS]
    assert [[x["id"] for x in top] for top in d["top_tokens"]] == [[5, 6], [6, 5], [2, 7]]
    assert d["top_tokens"][1][1] == {"id": 5, "text": "<5>", "log_prob": -2.0}


def test_jsonlines_one_line_per_token_last_adds_text_and_details():
    f = fmt({"inputs": PROMPT, "stream": True, "parameters": {"details": True}})
    parts = run(f)
    assert f.content_type == "application/jsonlines" and all(p.endswith("\n") and p.count("\n") == 1 for p in parts)
    lines = [json.loads(p) for p in parts]
    assert [ln["token"]["id"] for ln in lines] == [5, 6, 2]
    assert "generated_text" not in lines[0] and "details" not in lines[1]
    assert lines[2]["generated_text"] == TEXT
    assert lines[2]["details"] == {"finish_reason": "eos_token", "generated_tokens": 3, "inputs": PROMPT}
    assert "".join(ln["token"]["text"] for ln in lines) == TEXT


def test_sse_events_and_tgi_stream_schema():
    f = fmt({"inputs": PROMPT, "stream": True}, tgi_compat=True)
    body = "".join(run(f))
    assert f.content_type == "text/event-stream"
    events = body.split("\n\n")
    assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1]) and len(events) == 4
    payloads = [json.loads(e[len("data: "):]) for e in events[:-1]]
    text_generation = pytest.importorskip("text_generation")
    for p in payloads:
        text_generation.types.StreamResponse(**p)
    assert payloads[-1]["generated_text"] == TEXT and payloads[-1]["details"]["finish_reason"] == "eos_token"


def test_chat_json_is_one_chat_completion():
    f = fmt({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "model": "tiny"})
    parts = run(f)
    assert parts[:2] == ["", ""]
    doc = json.loads(parts[2])
    assert doc["object"] == "chat.completion" and doc["id"] == "chatcmpl-r1" and doc["model"] == "tiny"
    choice = doc["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": TEXT} and choice["finish_reason"] == "stop"
    assert [c["logprob"] for c in choice["logprobs"]["content"]] == [-0.5, -0.25, -0.125]
    assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    openai = pytest.importorskip("openai")
    openai.types.chat.ChatCompletion.model_validate(doc)


def test_chat_jsonlines_chunks():
    f = fmt({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    chunks = [json.loads(p) for p in run(f) if p]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"content": "Hel", "role": "assistant"}
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == TEXT
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert chunks[-1]["usage"]["completion_tokens"] == 3 and "usage" not in chunks[0]
    openai = pytest.importorskip("openai")
    for c in chunks:
        openai.types.chat.ChatCompletionChunk.model_validate(c)


def test_none_formatter_is_raw_text():
    f = fmt({"inputs": PROMPT, "parameters": {"output_formatter": "none"}})
    assert "".join(run(f)) == TEXT and f.content_type == CONTENT_TYPES["none"] == "text/plain"


@pytest.mark.parametrize("stream", [False, True])
def test_error_after_some_tokens(stream):
    f = fmt({"inputs": PROMPT, "stream": stream})
    first = f.format(STEPS[0])
    last = f.error("device lost")
    assert f.done
    if stream:
        line = json.loads(last)
        assert line["token"]["id"] == -1 and line["details"]["finish_reason"] == "error"
        assert line["details"]["error"] == "device lost" and line["generated_text"] == "Hel"
    else:
        doc = json.loads(first + last)
        assert doc["generated_text"] == "Hel" and doc["details"]["finish_reason"] == "error"
    with pytest.raises(RuntimeError):
        f.format(STEPS[1])


def test_engine_reported_error_and_error_before_any_token():
    f = fmt({"inputs": PROMPT})
    doc = json.loads(f.format(RequestOutput("r1", [], "", finished=True, finish_reason="error", error="nan logits")))
    assert doc == {"generated_text": "", "details": {"finish_reason": "error", "error": "nan logits",
                                                      "generated_tokens": 0, "inputs": PROMPT, "tokens": []}}
    chat = fmt({"messages": [{"role": "user", "content": "hi"}]})
    doc = json.loads(chat.error("oom"))
    assert doc["choices"][0]["finish_reason"] == "error" and doc["error"]["message"] == "oom"


def test_abort_without_a_token_closes_jsonlines():
    f = fmt({"inputs": PROMPT, "stream": True})
    f.format(STEPS[0])
    line = json.loads(f.format(RequestOutput("r1", [], "", finished=True, finish_reason="abort")))
    assert line["token"]["id"] == -1 and line["generated_text"] == "Hel"


def test_text_flushed_without_a_token_still_reaches_every_format():
    flush = RequestOutput("r1", [], "!", finished=True, finish_reason="abort")
    for body in ({"inputs": PROMPT, "stream": True}, {"inputs": PROMPT}):
        f = fmt(body)
        parts = [f.format(STEPS[0]), f.format(flush)]
        if body.get("stream"):
            lines = [json.loads(x) for x in "".join(parts).splitlines()]
            assert "".join(ln["token"]["text"] for ln in lines) == "Hel!" == lines[-1]["generated_text"]
        else:
            assert json.loads("".join(parts))["generated_text"] == "Hel!"
