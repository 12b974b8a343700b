"""The DJL entry point in-process, with a real engine on a tiny llama, driven through Java's wire (``djl_java``)."""

from __future__ import annotations

import json

import pytest

from djl_python import transformers_neuronx as tnx
from djl_python.djl import protocol
from djl_python.engine.request import SamplingParams
from djl_python.inputs import Input
from djl_python.pair_list import PairList
from tests.models import require_pytorch_backend
from tests.serving.djl_java import JavaInput, JavaRollingBatch, JavaWire, Loopback, http_input, in_process

PROPS = {"rolling_batch": "auto", "max_rolling_batch_size": "4", "device": "cpu", "n_positions": "128"}


@pytest.fixture(autouse=True)
def djl_028():
    protocol.activate(protocol.protocol_for("0.28.0"))
    yield
    protocol.activate(protocol.protocol_for("0.28.0"))


def build_engine(model_dir, **extra):
    from djl_python.config import load_config
    from djl_python.loader import load_engine

    require_pytorch_backend()
    config = load_config(model_dir=str(model_dir), properties={**PROPS, **extra, "model_dir": str(model_dir)})
    return config, load_engine(config)


@pytest.fixture
def service(tiny_llama):
    config, engine = build_engine(tiny_llama)
    svc = tnx.TransformersNeuronXService()
    svc.initialize({"model_dir": str(tiny_llama), "rolling_batch": "auto"}, engine=engine, config=config)
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


def java(service, version="0.28.0"):
    return JavaRollingBatch(in_process(service.handle, version), version)


def test_first_call_initialises_through_the_factory_with_javas_rule(monkeypatch, tiny_llama):
    require_pytorch_backend()
    seen = {}

    def factory(props):
        seen.update(props)
        return build_engine(tiny_llama)

    monkeypatch.setattr(tnx, "engine_factory", factory)
    svc = tnx.TransformersNeuronXService()
    assert svc.handle(Input({"model_dir": str(tiny_llama), "rolling_batch": "false"})) is None
    # Java rolls for "false" (set, not "disable"); the configuration gets "auto", and LMI's n_positions.
    assert svc.initialized and svc.rolling
    assert seen["model_dir"] == str(tiny_llama) and seen["rolling_batch"] == "auto" and seen["n_positions"] == "128"


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
        svc.handle(Input({"model_dir": "/nowhere", "rolling_batch": "auto"}))
    loop = java(svc)
    done = loop.run({0: [("a", http_input(lmi("Hello", 3)))]})
    assert done["a"].code == 503 and done["a"].message == "Batch inference failed" and loop.reset_next
    out = svc.handle(Input({"batch_size": "1"}, PairList(pair_list=[("batch_000.data", b"{}")])))
    assert out.code == 503 and "weights missing" in json.loads(out.content.value_at(0))["error"]


def test_rolling_batch_staggered_requests_match_offline_generation(service, offline):
    tok = service.engine.tokenizer
    loop = java(service)
    done = loop.run({
        0: [("a", http_input(lmi("The quick brown fox", 12, stream=True, parameters={"details": True})))],
        1: [("b", http_input(lmi("Paris is the capital", 6)))],
        2: [("bad", http_input('{"inputs": "x", "parameters": {"max_new_tokens": "lots"}}'))],
        3: [("c", http_input(lmi("Hello world!", 9, stream=True))),
            ("d", http_input(lmi("def f(x):", 5, parameters={"return_full_text": True})))],
    })
    assert set(done) == {"a", "b", "bad", "c", "d"} and loop.failed_batches == 0

    bad = done["bad"]  # DJL 0.28's handler: code 424 in the record; Java ends the stream with {"code","error"}
    assert bad.error["code"] == 424 and "parameters.max_new_tokens" in bad.error["error"]
    assert bad.headers["Content-Type"] == "application/json"

    for name, prompt, n in [("a", "The quick brown fox", 12), ("c", "Hello world!", 9)]:
        lines = [json.loads(x) for x in done[name].text.splitlines()]
        ref = offline(tok.encode(prompt), n)
        assert [ln["token"]["id"] for ln in lines] == ref.token_ids, name
        assert lines[-1]["generated_text"] == ref.text
        assert done[name].headers["Content-Type"] == "application/jsonlines"
    assert json.loads(done["a"].text.splitlines()[-1])["details"]["finish_reason"] == offline(
        tok.encode("The quick brown fox"), 12).finish_reason

    assert json.loads(done["b"].text) == {"generated_text": offline(tok.encode("Paris is the capital"), 6).text}
    assert json.loads(done["d"].text)["generated_text"] == "def f(x):" + offline(tok.encode("def f(x):"), 5).text
    assert not service.active and not service.engine.has_unfinished()


@pytest.mark.parametrize("version", ["0.26.0", "0.27.0"])
def test_bad_request_in_a_rolling_batch_on_older_djl_uses_json_records(service, offline, version):
    """DJL 0.26/0.27's handler answers in JSON records; a failure is data {"code": 424, "error"} + last."""
    protocol.activate(protocol.protocol_for(version))
    loop = java(service, version)
    done = loop.run({0: [("ok", http_input(lmi("Hello world!", 5))), ("bad", http_input("{oops"))]})
    assert done["bad"].code == 424 and "body" in done["bad"].message and done["bad"].last
    assert json.loads(done["bad"].text) == {"code": 424, "error": done["bad"].message}
    tok = service.engine.tokenizer
    assert json.loads(done["ok"].text) == {"generated_text": offline(tok.encode("Hello world!"), 5).text}
    assert done["ok"].code == 200


def test_chat_request_through_rolling_batch(service, offline):
    from djl_python.api.chat import render_chat

    tok = service.engine.tokenizer
    messages = [{"role": "user", "content": "Hello world"}]
    done = java(service).run({0: [("chat", http_input(json.dumps({"messages": messages, "max_tokens": 7,
                                                                   "temperature": 0})))]})
    doc = json.loads(done["chat"].text)
    prompt_ids = tok.encode(render_chat(tok, messages), add_special_tokens=False)
    ref = offline(prompt_ids, 7)
    assert doc["object"] == "chat.completion" and doc["choices"][0]["message"]["content"] == ref.text


def test_request_bodies_as_djl_reads_them(service, offline):
    """text/plain, form-urlencoded (Java decodes the form; the field's value is the prompt), CSV, string params."""
    tok = service.engine.tokenizer
    ref = offline(tok.encode("Hello world"), 30).text  # LMI's default max_new_tokens is 30
    done = java(service).run({0: [
        ("plain", http_input("Hello world", "text/plain")),
        ("form", http_input("inputs=Hello+world", "application/x-www-form-urlencoded")),
        ("csv", http_input("inputs\nHello world\n", "text/csv")),
        ("strings", http_input('{"inputs": "Hello world", "parameters": {"max_new_tokens": "4", "do_sample": "false",'
                               ' "details": "true"}}')),
        ("long", http_input(lmi("Hello world " * 200, 4))),
        ("list", http_input(json.dumps({"inputs": ["a", "b"]}))),
    ]})
    for name in ("plain", "form", "csv"):
        assert json.loads(done[name].text) == {"generated_text": ref}, name
    strings = json.loads(done["strings"].text)
    assert strings["generated_text"] == offline(tok.encode("Hello world"), 4).text
    assert strings["details"]["generated_tokens"] == len(offline(tok.encode("Hello world"), 4).token_ids)
    assert done["long"].error["code"] == 424 and done["long"].error["error"].startswith("inputs:")
    assert done["list"].error["code"] == 424 and "one prompt per request" in done["list"].error["error"]


def test_signed_java_seed_makes_sampling_reproducible(service):
    body = lmi("Hello world", 8, parameters={"do_sample": True, "temperature": 1.5})
    texts, seeds = [], []
    for seed in (7, 7, 8):  # draws -1499591369 twice, then -1173789389: Java's seeds are signed
        loop = java(service)
        loop._random.seed(seed)  # the same RandomUtils draw -> the same seed string
        done = loop.run({0: [("s", http_input(body))]})["s"]
        texts.append(json.loads(done.text)["generated_text"])
        seeds.append(int(done.seed))
    assert seeds[0] == seeds[1] < 0 and seeds[2] < 0 and seeds[2] != seeds[0]
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_plain_message_while_rolling_is_served_whole_and_rolling_requests_continue(service, offline):
    """Java 0.27+ sends a request with its own ``handler`` outside the loop: a plain Input, no batch_size."""
    tok = service.engine.tokenizer
    loop = java(service)
    loop.add("r", http_input(lmi("The quick brown fox", 10, stream=True)))
    loop.step()
    loop.step()
    send = in_process(service.handle, "0.28.0")
    plain = send(http_input(lmi("Paris is the capital", 6)))
    assert plain.code == 200 and plain.properties["Content-Type"] == "application/json"
    assert json.loads(plain.content[0][1]) == {"generated_text": offline(tok.encode("Paris is the capital"), 6).text}
    done = loop.run({})
    lines = [json.loads(x) for x in done["r"].text.splitlines()]
    assert [ln["token"]["id"] for ln in lines] == offline(tok.encode("The quick brown fox"), 10).token_ids
    bad = send(http_input("{oops"))
    assert bad.code == 400 and "body" in json.loads(bad.content[0][1])["error"]


def test_step_exception_ends_everything_with_error_frames_and_resets(service, monkeypatch):
    loop = java(service)
    a = loop.add("a", http_input(lmi("The quick brown fox", 20, stream=True)))
    b = loop.add("b", http_input(lmi("Paris is", 20)))
    loop.step()
    loop.step()
    real_step = service.engine.step
    monkeypatch.setattr(service.engine, "step", lambda: (_ for _ in ()).throw(RuntimeError("device fell over")))
    out = loop.step()
    assert out.code == 200 and not loop.in_flight and a.last and b.last
    last_line = json.loads(a.text.splitlines()[-1])
    assert last_line["details"]["finish_reason"] == "error" and "device fell over" in last_line["details"]["error"]
    assert json.loads(b.text)["details"]["finish_reason"] == "error"
    assert not service.active and not service.engine.has_unfinished()

    monkeypatch.setattr(service.engine, "step", real_step)  # the worker keeps serving afterwards
    done = loop.run({0: [("c", http_input(lmi("Hello", 3)))]})
    assert json.loads(done["c"].text)["generated_text"] is not None and done["c"].error is None


def test_reset_rollingbatch_property_drops_old_requests(service):
    loop = java(service)
    loop.add("old", http_input(lmi("The quick brown fox", 30)))
    loop.step()
    assert len(service.active) == 1
    loop.in_flight.clear()  # what Java does after a failed batch
    loop.reset_next = True
    done = loop.run({0: [("new", http_input(lmi("Hello", 3)))]})
    assert set(done) == {"new"} and "generated_text" in json.loads(done["new"].text)
    assert not service.engine.has_unfinished()


def test_static_batch_answers_like_djls_handler(tiny_llama, offline):
    """Java not rolling (rolling_batch absent): DJL's handler returns prompt + generation per input."""
    config, engine = build_engine(tiny_llama, rolling_batch="disable")
    svc = tnx.TransformersNeuronXService()
    svc.initialize({}, engine=engine, config=config)
    assert not svc.rolling
    tok = engine.tokenizer

    def full(prompt, n):
        ref = offline(tok.encode(prompt), n)
        return tok.decode(tok.encode(prompt) + ref.token_ids, skip_special_tokens=True)

    send = in_process(svc.handle, "0.28.0", str(tiny_llama))
    batch = JavaInput({"batch_size": "2", "batch_000.content-type": "application/json",
                       "batch_001.content-type": "application/json"},
                      [("batch_000.data", json.dumps({"inputs": ["Hello", "Paris is"],
                                                      "parameters": {"max_new_tokens": 5}}).encode()),
                       ("batch_001.data", b'{"inputs": "x", "parameters": {"top_p": 7.0}}')])
    out = send(batch)
    assert out.code == 200 and [k for k, _ in out.content] == ["batch_0.data", "batch_1.data"]
    assert json.loads(out.content[0][1]) == [{"generated_text": full(p, 5)} for p in ("Hello", "Paris is")]
    assert json.loads(out.content[1][1])["code"] == 400

    single = send(http_input(lmi("Hello", 4)))
    assert json.loads(single.content[0][1]) == [{"generated_text": full("Hello", 4)}]
    bad = send(http_input("{oops"))
    assert bad.code == 400 and "body" in json.loads(bad.content[0][1])["error"]


def test_partition_handler_builds_the_config_and_writes_the_checkpoint(monkeypatch, tmp_path, tiny_llama):
    """The LMI container's partition script calls ``partition(inputs)`` with option-less properties."""
    from djl_python import partition as aot

    calls = []
    monkeypatch.setattr(aot, "partition", lambda config, output: calls.append((config, output)) or output)
    out = tmp_path / "partitioned"
    inputs = Input({"model_dir": str(tiny_llama), "entryPoint": "djl_python.transformers_neuronx",
                    "save_mp_checkpoint_path": str(out), "tensor_parallel_degree": "2"})
    assert tnx.partition(inputs) is None
    (config, output), = calls
    assert output == out and config.n_positions == 128 and config.device == "neuron"
    assert config.model_id_or_path == str(tiny_llama)
    with pytest.raises(ValueError, match="save_mp_checkpoint_path"):
        tnx.partition(Input({"model_dir": str(tiny_llama)}))


def test_loopback_round_trip_is_byte_exact():
    """The in-process bridge itself: Java's bytes in, the same bytes read back."""
    sock = Loopback()
    wire = JavaWire(sock, "0.28.0")
    data = wire.encode(JavaInput({"k": "v"}, [("data", b"x")]))
    sock.sendall(data)
    inp = Input().read(sock)
    assert inp.properties == {"k": "v", "handler": "handle"} and inp.get_as_bytes() == b"x"
