"""Java's rules per DJL release, checked against the Java double (``djl_java``, from djl-serving's sources)."""

from __future__ import annotations

import json
import os
import logging
import struct
from pathlib import Path

import pytest

from djl_python import framing
from djl_python import transformers_neuronx as tnx
from djl_python.djl import bodies, install, protocol, rules
from djl_python.djl.launcher import parse_args
from djl_python.engine.request import InvalidRequest
from djl_python.inputs import Input
from djl_python.outputs import Output
from tests.models import require_pytorch_backend
from tests.serving.djl_java import (
    VERSIONS, JavaInput, JavaRollingBatch, JavaWire, Loopback, http_input, in_process, java_command, java_rolls,
)

VALUES = [None, "disable", "false", "auto", "tnx", "scheduler", "vllm", "lmi-dist", "trtllm"]


@pytest.fixture(autouse=True)
def restore_protocol():
    yield
    protocol.activate(protocol.protocol_for("0.28.0"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("value", VALUES)
def test_rolling_decision_is_javas(version, value, caplog):
    props = {"model_dir": "/nowhere"} if value is None else {"model_dir": "/nowhere", "rolling_batch": value}
    with caplog.at_level(logging.WARNING):
        decision = rules.decide(props, protocol.protocol_for(version))
    assert decision.rolling == java_rolls(props, version)
    assert decision.properties["rolling_batch"] == ("auto" if decision.rolling else "disable")
    if value in rules.COERCED:
        # DJL's handler coerces these to auto: served with a rolling batch, and we say so.
        assert decision.rolling and any(f"option.rolling_batch={value}" in w for w in decision.warnings)
    if value == "disable" and version == "0.26.0":
        assert decision.rolling and any("only checks that the key is set" in w for w in decision.warnings)


def test_n_positions_default_is_lmis_128_except_for_compiled_artifacts(tmp_path):
    p28 = protocol.protocol_for("0.28.0")
    decision = rules.decide({"model_dir": str(tmp_path)}, p28)
    assert decision.properties["n_positions"] == "128"
    assert any("option.n_positions" in w for w in decision.warnings)
    assert rules.decide({"n_positions": "512"}, p28).properties["n_positions"] == "512"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "neuron": {"sequence_length": 2048}}))
    assert "n_positions" not in rules.decide({"model_dir": str(tmp_path)}, p28).properties


@pytest.fixture(scope="module")
def shared_engine(tiny_llama):
    from djl_python.config import load_config
    from djl_python.loader import load_engine

    require_pytorch_backend()
    config = load_config(model_dir=str(tiny_llama), properties={
        "rolling_batch": "auto", "max_rolling_batch_size": "4", "device": "cpu", "n_positions": "128",
        "model_dir": str(tiny_llama)})
    return config, load_engine(config)


@pytest.mark.parametrize("version", ["0.26.0", "0.28.0"])
@pytest.mark.parametrize("value", [None, "disable", "false", "auto"])
def test_handler_answers_what_java_reads(shared_engine, version, value):
    """For each setting, Java (double) takes its own path and can read every reply of the handler."""
    config, engine = shared_engine
    protocol.activate(protocol.protocol_for(version))
    props = {} if value is None else {"rolling_batch": value}
    decision = rules.decide(props, protocol.current())
    svc = tnx.TransformersNeuronXService()
    svc.initialize(decision.properties, engine=engine, config=config, rolling=decision.rolling)
    send = in_process(svc.handle, version)
    body = http_input(json.dumps({"inputs": "Hello world", "parameters": {"max_new_tokens": 3}}))
    if java_rolls(props, version):
        loop = JavaRollingBatch(send, version)
        done = loop.run({0: [("r", body)]})
        assert loop.failed_batches == 0 and done["r"].code == 200
        assert "generated_text" in json.loads(done["r"].text)
    else:
        out = send(body)
        assert out.code == 200 and "generated_text" in json.loads(out.content[0][1])[0]


def test_string_framing_follows_the_release():
    """0.26: int16 string lengths, both ways; 0.27+: int32 (djl-serving 89a22be3)."""
    for version, width in (("0.26.0", 2), ("0.27.0", 4), ("0.28.0", 4)):
        protocol.activate(protocol.protocol_for(version))
        assert framing.string_length_bytes() == width
        sock = Loopback()
        sock.sendall(JavaWire(sock, version).encode(JavaInput({"ключ": "значение"}, [("data", b"x")])))
        inp = Input().read(sock)
        assert inp.properties["ключ"] == "значение" and sock.pos == len(sock.buf)
        back = Loopback()
        Output(201, "Créé").add_property("k", "v").add("é", key="data").send(back)
        out = JavaWire(back, version).read_output()
        assert (out.code, out.message, out.properties, out.content) == (201, "Créé", {"k": "v"}, [("data", "é".encode())])
    protocol.activate(protocol.protocol_for("0.26.0"))
    with pytest.raises(ValueError, match="int16"):
        Output().add_property("big", "x" * 40_000).send(Loopback())


def test_wire_override_and_bad_versions():
    assert protocol.protocol_for("0.28.0", env={"DJL_PYTHON_WIRE": "int16"}).string_length_bytes == 2
    assert protocol.protocol_for("0.26.0", env={"DJL_PYTHON_WIRE": "int32"}).string_length_bytes == 4
    with pytest.raises(ValueError, match="DJL_PYTHON_WIRE"):
        protocol.protocol_for("0.28.0", env={"DJL_PYTHON_WIRE": "int64"})
    with pytest.raises(ValueError, match="not a DJL version"):
        protocol.protocol_for("latest")
    assert protocol.protocol_for("0.29.0-SNAPSHOT", env={}).json_records is False


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_accepts_javas_arguments_and_warns_on_unknown_ones(tmp_path, version):
    cmd = java_command(tmp_path, tmp_path, "/tmp/djl_sock.19000", "model.py", 0)
    args = parse_args(cmd[2:])
    assert (args.sock_type, args.sock_name, args.model_dir, args.entry_point, args.device_id) == \
        ("unix", "/tmp/djl_sock.19000", str(tmp_path), "model.py", "0") and not args.unknown
    # MPI mode's order and its --tensor-parallel-degree; TCP's --port; a future option.
    mpi = parse_args(["--model-dir", "m", "--entry-point", "e", "--sock-type", "unix", "--sock-name", "s",
                      "--tensor-parallel-degree", "2"])
    assert mpi.tensor_parallel_degree == 2
    tcp = parse_args(["--sock-type", "tcp", "--port", "19001", "--model-dir", "m", "--future-flag", "x"])
    assert tcp.port == 19001 and tcp.unknown == ["--future-flag", "x"]


def test_bodies_and_seeds():
    assert bodies.decode_body(b"a,b", "text/plain") == {"inputs": "a,b"}
    assert bodies.decode_body(b"", None) == {"inputs": ""}
    assert bodies.decode_body(b"inputs\nx\ny\n", "text/csv") == {"inputs": ["x", "y"]}
    with pytest.raises(InvalidRequest, match="Content-Type"):
        bodies.decode_body(b"\x00", "application/octet-stream")
    with pytest.raises(InvalidRequest, match="header row"):
        bodies.decode_body(b"a,b\n1,2\n", "text/csv")
    coerced = bodies.coerce_parameters({"inputs": "x", "parameters": {"max_new_tokens": "20", "temperature": "0.5",
                                                                     "do_sample": "True", "stop": ["10"],
                                                                     "top_k": "many"}})
    assert coerced["parameters"] == {"max_new_tokens": 20, "temperature": 0.5, "do_sample": True, "stop": ["10"],
                                     "top_k": "many"}
    assert bodies.java_seed("-1") == 2**32 - 1 and bodies.java_seed("42") == 42 and bodies.java_seed("x") is None


def test_binary_record_is_what_java_reads(monkeypatch):
    """A 0.28 failure record parsed by Java's binary branch: the stream ends with {"code": 424, "error"}."""
    from djl_python.djl import records

    p28 = protocol.protocol_for("0.28.0")
    loop = JavaRollingBatch(lambda inp: None, "0.28.0")
    req = loop.add("x", http_input("{}"))
    loop._add_response(req, records.failure_record("bad things", p28))
    assert req.last and json.loads(req.chunks[-1]) == {"code": 424, "error": "bad things"}
    token = records.token_record("tök", False, p28)
    assert token[:2] == struct.pack(">h", 2)
    loop._add_response(req, token)
    assert req.chunks[-1] == "tök".encode() and not req.last


def test_installer_folder_and_version_rules(tmp_path, monkeypatch):
    assert install.engine_cache_folder("0.27.0", {"ENGINE_CACHE_DIR": "/e", "DJL_CACHE_DIR": "/d"})[0] == \
        Path("/e/python/0.27.0")
    assert install.engine_cache_folder("0.28.0", {"DJL_CACHE_DIR": "/tmp/.djl.ai"})[0] == \
        Path("/tmp/.djl.ai/python/0.28.0")
    target = tmp_path / "python" / "0.26.0"
    launcher = install.install(target)  # the version comes from the folder's name
    assert "DJL_VERSION = '0.26.0'" in launcher.read_text()
    (target / "djl_python").mkdir()
    install.install(target, "0.26.0")  # re-run: a second bundled copy goes aside too, nothing is lost
    assert (target / "djl_python.djl-bundled").is_dir() and not (target / "djl_python").exists()
    assert install.main(["--target", str(tmp_path / "x"), "--djl-version", "zero"]) == 2


def test_a_djl_body_with_an_integer_of_too_many_digits_is_refused_naming_the_body():
    with pytest.raises(InvalidRequest) as err:
        bodies.decode_body(b'{"inputs": "hi", "x": ' + b"9" * 5000 + b"}", "application/json")
    assert err.value.field == "body" and "digits" in str(err.value)


def test_written_rolling_batch_reads_serving_properties_before_the_environment(tmp_path):
    """DJL's precedence (v0.28.0 ModelInfo.java:793-811): serving.properties, then OPTION_*."""
    assert rules.written_rolling_batch(str(tmp_path), {}) is None
    assert rules.written_rolling_batch(str(tmp_path), {"OPTION_ROLLING_BATCH": "auto"}) == "auto"
    (tmp_path / "serving.properties").write_text("engine=Python\noption.rolling_batch = tnx\n")
    assert rules.written_rolling_batch(str(tmp_path), {"OPTION_ROLLING_BATCH": "auto"}) == "tnx"
    assert rules.written_rolling_batch(None, {}) is None
    # java.util.Properties: ':' or blanks separate, comments skipped, the last occurrence wins
    (tmp_path / "serving.properties").write_text("option.rolling_batch: auto\n# option.rolling_batch=x\n"
                                                 "option.rolling_batch   disable\n")
    assert rules.written_rolling_batch(str(tmp_path), {}) == "disable"


@pytest.mark.parametrize(("written", "warned"),
                         [("auto", True), (None, True), ("AUTO", True), ("tnx", True), ("disable", False)])
def test_java_rewriting_auto_to_disable_is_explained(written, warned, caplog):
    """DJL 0.28+ rewrites auto to disable (LmiConfigRecommender): static requests, with one warning
    naming the value that rolls on every release; a user's own disable is not warned about."""
    with caplog.at_level(logging.WARNING, logger="djl_python.djl.rules"):
        decision = rules.decide({"rolling_batch": "disable", "n_positions": "128"},
                                protocol.protocol_for("0.28.0"), written)
    assert not decision.rolling and decision.properties["rolling_batch"] == "disable"
    said = [r.getMessage() for r in caplog.records if "sent option.rolling_batch=disable" in r.getMessage()]
    assert len(said) == (1 if warned else 0)
    if warned:
        assert "option.rolling_batch=tnx" in said[0] and "one at a time" in said[0]


def test_dynamic_batching_is_not_warned_about(caplog):
    """batch_size > 1 makes Java send disable for any value: the user asked for static batches."""
    with caplog.at_level(logging.WARNING, logger="djl_python.djl.rules"):
        rules.decide({"rolling_batch": "disable", "batch_size": "4", "n_positions": "128"},
                     protocol.protocol_for("0.28.0"), "tnx")
    assert "sent option.rolling_batch=disable" not in caplog.text


def test_no_rolling_key_at_all_is_not_a_rewrite(caplog):
    """0.26-0.28 without a recommender value: the user chose static; nothing to explain."""
    with caplog.at_level(logging.WARNING, logger="djl_python.djl.rules"):
        decision = rules.decide({"n_positions": "128"}, protocol.protocol_for("0.28.0"), None)
    assert not decision.rolling and not any("sent option.rolling_batch" in r.getMessage() for r in caplog.records)


def test_the_service_compares_java_properties_with_the_model_folder(tmp_path, monkeypatch, caplog):
    """The first message's rolling_batch=disable against the folder's auto: the handler warns."""
    (tmp_path / "serving.properties").write_text("engine=Python\noption.rolling_batch=auto\n")
    monkeypatch.delenv("OPTION_ROLLING_BATCH", raising=False)
    protocol.activate(protocol.protocol_for("0.28.0"))

    def factory(props):
        raise RuntimeError("stop after the decision")

    monkeypatch.setattr(tnx, "engine_factory", factory)
    svc = tnx.TransformersNeuronXService()
    with caplog.at_level(logging.WARNING, logger="djl_python.djl.rules"), pytest.raises(RuntimeError):
        svc.handle(Input({"model_dir": str(tmp_path), "rolling_batch": "disable", "n_positions": "128"}))
    assert any("option.rolling_batch=auto: DJL's LMI config recommender" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("version", ["0.28.0", "0.29.0", "0.31.0"])
def test_output_formatter_none_ending_on_a_stop_id_reaches_the_client(shared_engine, version):
    """0.29-0.31 drop an empty last record (v0.29.0 RollingBatch.java:356-359): a `none` stream
    that ends on a stop id must still deliver its last record, with the text before the stop."""
    config, engine = shared_engine
    protocol.activate(protocol.protocol_for("0.28.0"))
    svc = tnx.TransformersNeuronXService()
    svc.initialize({"rolling_batch": "auto"}, engine=engine, config=config, rolling=True)
    probe = JavaRollingBatch(in_process(svc.handle, "0.28.0"), "0.28.0")
    ask = {"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 10}, "stream": True}
    lines = probe.run({0: [("p", http_input(json.dumps(ask)))]})["p"].text.splitlines()
    ids = [json.loads(line)["token"]["id"] for line in lines]
    stop = next(t for t in ids[2:] if t not in ids[:2])
    expected = engine.tokenizer.decode(ids[: ids.index(stop)], skip_special_tokens=True)

    protocol.activate(protocol.protocol_for(version))
    loop = JavaRollingBatch(in_process(svc.handle, version), version)
    ask["parameters"] = {"max_new_tokens": 10, "stop_token_ids": [stop], "output_formatter": "none"}
    done = loop.run({0: [("r", http_input(json.dumps(ask)))]})["r"]
    assert done.lasts and done.lasts[-1] and not any(done.lasts[:-1]), done.lasts
    assert done.text == expected


def test_installer_finds_the_folder_from_jvm_options_and_a_read_only_home(tmp_path):
    """DJL's Utils: a -D option counts as the variable; a read-only user.home sends the cache to
    java.io.tmpdir/.djl.ai. The environment variable beats the -D option."""
    opts = {"JAVA_OPTS": "-Xmx1g -DDJL_CACHE_DIR=/opt/djl-cache"}
    folder, found = install.engine_cache_folder("0.28.0", opts, home=str(tmp_path))
    assert folder == Path("/opt/djl-cache/python/0.28.0") and "-DDJL_CACHE_DIR" in found
    assert install.engine_cache_folder("0.28.0", {**opts, "DJL_CACHE_DIR": "/env"}, home=str(tmp_path))[0] == \
        Path("/env/python/0.28.0")
    assert install.engine_cache_folder("0.28.0", {"SERVING_OPTS": "-DENGINE_CACHE_DIR=/e2"})[0] == \
        Path("/e2/python/0.28.0")
    home = tmp_path / "home"
    home.mkdir()
    assert install.engine_cache_folder("0.28.0", {}, home=str(home))[0] == home / ".djl.ai" / "python" / "0.28.0"
    if os.geteuid() != 0:  # root may write anywhere: a read-only home is only visible to others
        home.chmod(0o500)
        folder, found = install.engine_cache_folder("0.28.0", {"JAVA_OPTS": f"-Djava.io.tmpdir={tmp_path}"},
                                                    home=str(home))
        assert folder == tmp_path / ".djl.ai" / "python" / "0.28.0" and "not writable" in found
    else:
        folder, found = install.engine_cache_folder(
            "0.28.0", {"JAVA_OPTS": f"-Duser.home=/proc/1/nonexistent -Djava.io.tmpdir={tmp_path}"})
        assert folder == tmp_path / ".djl.ai" / "python" / "0.28.0" and "not writable" in found


def test_the_java_double_applies_the_recommenders_rewrites_and_the_handler_explains_them(tmp_path, caplog):
    """DJL 0.28 (no GPU, no tnx feature): auto becomes disable and tensor_parallel_degree 0;
    the handler serves static requests with tensor_parallel_degree 1 and says why for both."""
    from tests.serving.djl_java import init_properties

    text = "engine=Python\noption.entryPoint=djl_python.transformers_neuronx\noption.rolling_batch=auto\n"
    (tmp_path / "serving.properties").write_text(text)
    sent = init_properties(text, "0.28.0", env={"OPTION_MAX_ROLLING_BATCH_SIZE": "4"})
    assert sent["rolling_batch"] == "disable" and sent["tensor_parallel_degree"] == "0"
    assert sent["max_rolling_batch_size"] == "4"
    assert init_properties(text, "0.28.0", features="tnx")["rolling_batch"] == "tnx"
    assert init_properties(text, "0.26.0")["rolling_batch"] == "auto"  # no recommender before 0.28
    assert "tensor_parallel_degree" not in init_properties(text, "0.29.0")  # 0.29 without GPU
    with caplog.at_level(logging.WARNING, logger="djl_python.djl.rules"):
        decision = rules.decide({**sent, "n_positions": "128"}, protocol.protocol_for("0.28.0"),
                                rules.written_rolling_batch(str(tmp_path), {}))
    assert not decision.rolling and "option.rolling_batch=tnx" in caplog.text
    from djl_python.config import load_config

    with caplog.at_level(logging.WARNING):
        config = load_config(properties={**decision.properties, "model_id": "org/model", "device": "cpu"}, env={})
    assert config.tensor_parallel_degree == 1
