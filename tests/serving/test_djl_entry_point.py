"""The DJL entry point in-process, with a real engine on a tiny llama, driven like Java drives it."""

from __future__ import annotations

import json

import pytest

from djl_python import transformers_neuronx as tnx
from djl_python.engine.request import SamplingParams
from djl_python.inputs import Input
from djl_python.pair_list import PairList
from tests.serving.djl_java import JavaRollingBatch

PROPS = {"rolling_batch": "auto", "max_rolling_batch_size": "4", "device": "cpu", "n_positions": "128"}


def build_engine(model_dir, **extra):
    from djl_python.config import load_config
    from djl_python.loader import load_engine

    config = load_config(model_dir=str(model_dir), properties={**PROPS, **extra, "model_dir": str(model_dir)})
    return config, load_engine(config)


@pytest.fixture
def service(tiny_llama):
    config, engine = build_engine(tiny_llama)
    svc = tnx.TransformersNeuronXService()
    svc.initialize({"model_dir": str(tiny_llama)}, engine=engine, config=config)
    return svc


@pytest.fixture
def offline(tiny_llama):
    """Greedy reference: each prompt alone through a separate engine."""
    _, engine = build_engine(tiny_llama)

    def run(prompt_ids, max_new_tokens):
        return engine.generate([prompt_ids], SamplingParams(max_new_tokens=max_new_tokens))[0]

    return run


def lmi(prompt, n, **kw):
    return json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": n, **kw.pop("parameters", {})}, **kw})


def test_first_call_initialises_through_the_factory(monkeypatch, tiny_llama):
    seen = {}

    def factory(props):
        seen.update(props)
        return build_engine(tiny_llama)

    monkeypatch.setattr(tnx, "engine_factory", factory)
    svc = tnx.TransformersNeuronXService()
    assert svc.handle(Input({"model_dir": str(tiny_llama), "rolling_batch": "auto"})) is None
    assert svc.initialized and svc.rolling and seen["model_dir"] == str(tiny_llama)


def test_bad_property_from_the_front_end_names_the_option_key(tmp_path):
    """Java strips ``option.``; the error names the key as written in serving.properties."""
    from djl_python.config import ConfigError

    svc = tnx.TransformersNeuronXService()
    with pytest.raises(ConfigError) as err:
        svc.handle(Input({"model_dir": str(tmp_path), "max_rolling_batch_size": "lots", "rolling_batch": "auto"}))
    assert "option.max_rolling_batch_size" in str(err.value) and "lots" in str(err.value)


def test_failed_initialisation_is_reported_to_later_requests(monkeypatch):
    def factory(props):
        raise OSError("weights missing")

    monkeypatch.setattr(tnx, "engine_factory", factory)
    svc = tnx.TransformersNeuronXService()
    with pytest.raises(OSError):
        svc.handle(Input({"model_dir": "/nowhere"}))
    java = JavaRollingBatch(svc.handle)
    done = java.run({0: [("a", lmi("Hello", 3))]})
    assert done["a"].code == "503" and done["a"].error == "Batch inference failed"
    out = svc.handle(Input({"batch_size": "1"}, PairList([("batch_000.data", b"{}")])))
    assert out.code == 503 and "weights missing" in json.loads(out.content.value_at(0))["error"]


def test_rolling_batch_staggered_requests_match_offline_generation(service, offline):
    tok = service.engine.tokenizer
    java = JavaRollingBatch(service.handle)
    done = java.run({
        0: [("a", lmi("The quick brown fox", 12, stream=True, parameters={"details": True}))],
        1: [("b", lmi("Paris is the capital", 6))],
        2: [("bad", '{"inputs": "x", "parameters": {"max_new_tokens": "lots"}}')],
        3: [("c", lmi("Hello world!", 9, stream=True)), ("d", lmi("def f(x):", 5, parameters={"return_full_text": True}))],
    })
    assert set(done) == {"a", "b", "bad", "c", "d"}

    bad = done["bad"]
    assert bad.code == "400" and "parameters.max_new_tokens" in bad.error and bad.text == ""

    for name, prompt, n in [("a", "The quick brown fox", 12), ("c", "Hello world!", 9)]:
        lines = [json.loads(x) for x in done[name].text.splitlines()]
        ref = offline(tok.encode(prompt), n)
        assert [ln["token"]["id"] for ln in lines] == ref.token_ids, name
        assert lines[-1]["generated_text"] == ref.text
        assert done[name].headers["Content-Type"] == "application/jsonlines"
    assert json.loads(done["a"].text.splitlines()[-1])["details"]["finish_reason"] == offline(
        tok.encode("The quick brown fox"), 12).finish_reason

    doc_b = json.loads(done["b"].text)
    assert doc_b == {"generated_text": offline(tok.encode("Paris is the capital"), 6).text}
    assert json.loads(done["d"].text)["generated_text"] == "def f(x):" + offline(tok.encode("def f(x):"), 5).text
    assert not service.active and not service.engine.has_unfinished()


def test_chat_request_through_rolling_batch(service, offline):
    from djl_python.api.chat import render_chat

    tok = service.engine.tokenizer
    messages = [{"role": "user", "content": "Hello world"}]
    java = JavaRollingBatch(service.handle)
    done = java.run({0: [("chat", json.dumps({"messages": messages, "max_tokens": 7, "temperature": 0}))]})
    doc = json.loads(done["chat"].text)
    prompt_ids = tok.encode(render_chat(tok, messages), add_special_tokens=False)
    ref = offline(prompt_ids, 7)
    assert doc["object"] == "chat.completion" and doc["choices"][0]["message"]["content"] == ref.text
    assert doc["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": len(ref.token_ids),
                            "total_tokens": len(prompt_ids) + len(ref.token_ids)}


def test_bad_requests_fail_alone_and_text_plain_works(service):
    java = JavaRollingBatch(service.handle)
    plain = java.add("plain", "Hello world", content_type="text/plain")
    done = java.run({0: [("ok", lmi("Hello", 4)), ("long", lmi("Hello world " * 200, 4)),
                         ("list", json.dumps({"inputs": ["a", "b"]})), ("empty", "")]})
    assert done["long"].code == "400" and done["long"].error.startswith("inputs:")
    assert done["list"].code == "400" and "one prompt per request" in done["list"].error
    assert done["empty"].code == "400" and done["empty"].error.startswith("body:")
    assert "generated_text" in json.loads(done["ok"].text) and done["ok"].code is None
    assert plain.last and plain.code is None and "generated_text" in json.loads(plain.text)


def test_step_exception_ends_everything_with_error_frames_and_resets(service, monkeypatch):
    java = JavaRollingBatch(service.handle)
    a = java.add("a", lmi("The quick brown fox", 20, stream=True))
    b = java.add("b", lmi("Paris is", 20))
    java.step()
    java.step()
    real_step = service.engine.step
    monkeypatch.setattr(service.engine, "step", lambda: (_ for _ in ()).throw(RuntimeError("device fell over")))
    out = java.step()
    assert out.code == 200 and not java.in_flight and a.last and b.last
    last_line = json.loads(a.text.splitlines()[-1])
    assert last_line["details"]["finish_reason"] == "error" and "device fell over" in last_line["details"]["error"]
    assert json.loads(b.text)["details"]["finish_reason"] == "error"
    assert not service.active and not service.engine.has_unfinished()

    monkeypatch.setattr(service.engine, "step", real_step)  # the worker keeps serving afterwards
    done = java.run({0: [("c", lmi("Hello", 3))]})
    assert json.loads(done["c"].text)["generated_text"] is not None and done["c"].code is None


def test_reset_rollingbatch_property_drops_old_requests(service):
    java = JavaRollingBatch(service.handle)
    java.add("old", lmi("The quick brown fox", 30))
    java.step()
    assert len(service.active) == 1
    java.in_flight.clear()  # what Java does after a failed batch
    java.reset_next = True
    done = java.run({0: [("new", lmi("Hello", 3))]})
    assert set(done) == {"new"} and "generated_text" in json.loads(done["new"].text)
    assert not service.engine.has_unfinished()


def test_non_rolling_static_batch(tiny_llama, offline):
    config, engine = build_engine(tiny_llama, rolling_batch="disable")
    svc = tnx.TransformersNeuronXService()
    svc.initialize({}, engine=engine, config=config)
    assert not svc.rolling
    tok = engine.tokenizer
    batch = Input(
        {"batch_size": "2", "batch_000.Content-Type": "application/json", "batch_001.Content-Type": "application/json"},
        PairList([("batch_000.data", json.dumps({"inputs": ["Hello", "Paris is"], "parameters": {"max_new_tokens": 5}}).encode()),
                  ("batch_001.data", b'{"inputs": "x", "parameters": {"top_p": 7.0}}')]),
    )
    out = svc.handle(batch)
    assert out.code == 200 and out.content.get_keys() == ["batch_0.data", "batch_1.data"]
    first = json.loads(out.content.value_at(0))
    assert first == [{"generated_text": offline(tok.encode(p), 5).text} for p in ("Hello", "Paris is")]
    assert json.loads(out.content.value_at(1))["code"] == 400

    single = svc.handle(Input({"Content-Type": "application/json"}, PairList([("data", lmi("Hello", 4).encode())])))
    assert json.loads(single.content.get("data")) == [{"generated_text": offline(tok.encode("Hello"), 4).text}]
    bad = svc.handle(Input({}, PairList([("data", b"{oops")])))
    assert bad.code == 400 and "body" in json.loads(bad.content.value_at(0))["error"]
