"""The public API custom DJL handlers use, member by member (DJL v0.26-v0.28 ``djl_python`` as the contract)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.serving.djl_java import JavaInput, JavaWire, Loopback, java_command, java_environment

REPO = Path(__file__).resolve().parents[2]


def test_top_level_imports_and_djl_module_names():
    import djl_python
    from djl_python import Input, Output, PairList  # noqa: F401 - the import itself is the contract
    from djl_python.arg_parser import ArgParser
    from djl_python.encode_decode import decode, encode  # noqa: F401
    from djl_python.service_loader import ModelService, load_model_service  # noqa: F401
    from djl_python.sm_log_filter import SMLogFilter

    assert djl_python.__version__
    args = ArgParser.python_engine_args().parse_args(["--sock-type", "unix", "--sock-name", "s", "--model-dir", "m"])
    assert args.device_id == "-1"
    import logging

    rec = lambda msg: logging.LogRecord("x", logging.INFO, __file__, 1, msg, None, None)  # noqa: E731
    assert SMLogFilter().filter(rec("ModelServerError: x: 1 Count")) and not SMLogFilter().filter(rec("hello"))


def test_input_read_fills_in_place():
    from djl_python import Input

    sock = Loopback()
    sock.sendall(JavaWire(sock, "0.28.0").encode(JavaInput({"Content-Type": "application/json"},
                                                           [("data", b'{"inputs": "hi"}'), ("extra", b"")])))
    inputs = Input()
    assert inputs.read(sock) is inputs  # DJL's engine does `inputs = Input(); inputs.read(sock)`
    assert inputs.function_name == inputs.get_function_name() == "handle"
    assert inputs.get_properties()["Content-Type"] == "application/json"
    assert inputs.get_data() == {"inputs": "hi"} and inputs.get_as_json() == {"inputs": "hi"}
    assert inputs.get_as_string() == '{"inputs": "hi"}' and inputs.get_as_bytes("extra") == b""
    assert inputs.contains_key("extra") and not inputs.is_batch() and inputs.get_batches() == [inputs]


def test_input_getters_by_content_type():
    from djl_python import Input, Output, PairList

    npz = Output().add_as_npz([np.arange(3), np.ones((2, 2))]).content.value_at(0)
    inp = Input({"content-type": "tensor/npz"}, PairList(pair_list=[("data", npz)]))
    a, b = inp.get_data()
    assert a.tolist() == [0, 1, 2] and b.shape == (2, 2) and len(inp.get_as_npz()) == 2
    nd = Output().add_as_numpy([np.array([1.5], np.float32)]).content.value_at(0)
    assert Input({"Content-Type": "tensor/ndlist"}, PairList(pair_list=[("data", nd)])).get_data()[0].tolist() == [1.5]
    csv_in = Input({"content-type": "text/csv"}, PairList(pair_list=[("data", b"inputs,x\nhello,1\n")]))
    assert csv_in.get_as_csv() == [{"inputs": "hello", "x": "1"}] and csv_in.get_data() == "inputs,x\nhello,1\n"
    raw = Input({}, PairList(pair_list=[("other", b"\x01")]))
    assert raw.get_data() == b"\x01"  # no data key: the first item
    batch = Input({"batch_size": "2", "batch_001.k": "v"},
                  PairList(pair_list=[("batch_000.data", b"a"), ("batch_001.data", b"b")]))
    assert batch.is_batch() and [b.get_as_string() for b in batch.get_batches()] == ["a", "b"]
    assert batch.get_batches()[1].get_properties() == {"k": "v"}


def test_output_members():
    from djl_python import Output

    out = Output().set_code(206).set_message("Partial").add_property("X", 1)
    out.add("text", key="a").add(b"raw", key="b").add({"n": np.int64(3), "f": np.float32(0.5), "a": np.arange(2)},
                                                       key="c")
    out.add_as_json([1], key="d", batch_index=3)
    assert (out.code, out.message, out.properties) == (206, "Partial", {"X": "1"})  # strings on the wire
    assert out.content.get_keys() == ["a", "b", "c", "batch_3.d"]
    assert json.loads(out.content.get("c")) == {"n": 3, "f": 0.5, "a": [0, 1]}
    err = Output().error("bad", code=400, message="invalid")
    assert err.code == 400 and json.loads(err.content.value_at(0)) == {"code": 400, "message": "invalid",
                                                                      "error": "bad"}
    calls = []
    assert Output().finalize(lambda x, y: calls.append((x, y)) or "r", 1, 2).execute_finalize() == "r"
    assert calls == [(1, 2)] and Output().execute_finalize() is None
    # add_stream_content's default wraps each item as {"outputs": item} + newline, as DJL's does.
    sink = Loopback()
    Output().add_stream_content(iter(["a", ["b"]])).send(sink)
    frames = JavaWire(sink, "0.28.0").read_output().chunks
    assert frames == [b'{"outputs": "a"}\n', b'{"outputs": ["b"]}\n', b""]
    custom = Loopback()
    Output().add_stream_content(iter([1]), output_formatter=lambda t: f"<{t}>").send(custom)
    assert JavaWire(custom, "0.28.0").read_output().chunks == [b"<1>", b""]


def test_pair_list_members():
    from djl_python import PairList

    pl = PairList(keys=["a", "b"], values=[1, 2])
    assert pl.keys == ["a", "b"] and pl.values == [1, 2]
    pl.add("c", 3)
    pl.add(key="z", value=0, index=0)
    pl.add(pair=("d", 4))
    pl.add("ignored", None)  # DJL ignores a None value
    pl.add_all(PairList(pair_map={"e": 5}))
    assert pl.get_keys() == ["z", "a", "b", "c", "d", "e"] and pl.get_values() == [0, 1, 2, 3, 4, 5]
    assert pl.get("c") == 3 and pl.key_at(1) == "a" and pl.value_at(-1) == 5 and pl.size() == 6
    assert PairList(pair_list=[("k", 1)]).get("k") == 1 and PairList().is_empty()
    with pytest.raises(ValueError, match="mismatch"):
        PairList(keys=["a"], values=[1, 2])


def test_encode_decode():
    from djl_python import Input, Output, PairList
    from djl_python.encode_decode import decode, encode

    def make(body: bytes, ct=None):
        return Input({"Content-Type": ct} if ct else {}, PairList(pair_list=[("data", body)]))

    assert decode(make(b'{"inputs": "x"}'), "application/json") == {"inputs": "x"}
    assert decode(make(b""), None) == {"inputs": ""}
    assert decode(make(b"hello"), "text/plain") == {"inputs": ["hello"]}
    assert decode(make(b"inputs\nq1\nq2\n"), "text/csv") == {"inputs": ["q1", "q2"]}
    assert decode(make(b"a=1"), "application/x-www-form-urlencoded") == {"inputs": "a=1"}
    assert decode(make(b"\x00"), "application/octet-stream") == {"inputs": b"\x00"}
    out = Output()
    encode(out, [{"a": 1, "b": 2}], "text/csv")
    assert out.content.value_at(0) == b"a,b\r\n1,2\r\n" and out.properties["Content-Type"] == "text/csv"
    out = Output()
    encode(out, {"k": 1}, None)
    assert json.loads(out.content.value_at(0)) == {"k": 1} and out.properties["Content-Type"] == "application/json"
    out = Output()
    encode(out, [np.zeros(2)], "tensor/npz")
    with np.load(io.BytesIO(out.content.value_at(0))) as z:
        assert z["arr_0"].tolist() == [0, 0]


MODEL_PY = '''
import pathlib
from djl_python import Input, Output


def handle(inputs: Input):
    if inputs.is_empty():
        return None  # the initialising message
    data = inputs.get_as_json()
    if data.get("stream"):
        return Output().add_stream_content(iter(["a", "b"]))
    out = Output().add_as_json({"module": __name__, "echo": data, "model_dir": inputs.get_properties()["model_dir"],
                                "device_id": inputs.get_properties()["device_id"]})
    return out.finalize(lambda path: pathlib.Path(path).write_text("finalized"), data["marker"])


def fail(inputs: Input):
    raise RuntimeError("custom failure")
'''


def test_custom_model_py_by_absolute_path_through_the_launcher(tmp_path):
    """Java passes a downloaded entry point as an absolute path; DJL's loader imports it as module ``model``."""
    from djl_python.djl.install import install

    engine_dir = tmp_path / "python" / "0.27.0"
    install(engine_dir)
    code_dir, model_dir = tmp_path / "download", tmp_path / "model"
    code_dir.mkdir()
    model_dir.mkdir()
    (code_dir / "model.py").write_text(MODEL_PY)
    sock_dir = Path(tempfile.mkdtemp(prefix="djl", dir="/tmp"))
    sock_path = str(sock_dir / "djl_sock.19001")
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(java_command(engine_dir, model_dir, sock_path, str(code_dir / "model.py"), 3),
                            env=java_environment(engine_dir, model_dir, base), cwd=str(model_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            log.append(line)
            if "Python engine started." in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert started.wait(60), "".join(log)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(sock_path)
        sock.settimeout(60)
        wire = JavaWire(sock, "0.27.0")
        assert wire.send(JavaInput({"some_option": "x"})).code == 204
        marker = tmp_path / "finalized.txt"
        out = wire.send(JavaInput({"Content-Type": "application/json"},
                                  [("data", json.dumps({"marker": str(marker)}).encode())]))
        doc = json.loads(out.content[0][1])
        assert doc == {"module": "model", "echo": {"marker": str(marker)}, "model_dir": str(model_dir),
                       "device_id": "3"}
        stream = wire.send(JavaInput({}, [("data", b'{"stream": true}')]))
        assert stream.chunks == [b'{"outputs": "a"}\n', b'{"outputs": "b"}\n', b""]
        assert marker.read_text() == "finalized"  # execute_finalize ran after the reply was sent
        failed = wire.send(JavaInput({"handler": "fail"}, [("data", b"{}")]))
        assert failed.code == 424 and json.loads(failed.content[0][1])["error"] == "custom failure"
        sock.close()
        assert proc.wait(30) == 0, "".join(log)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_service_loader_rules(tmp_path):
    from djl_python import Input
    from djl_python.service_loader import load_model_service

    (tmp_path / "my_handler.py").write_text("def handle(inputs):\n    return inputs.get_properties()['model_dir']\n")
    service = load_model_service(str(tmp_path), "my_handler.py", "-1")
    assert service.invoke_handler("handle", Input()) == str(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_model_service(str(tmp_path), "missing.py", "-1")
    with pytest.raises(ValueError, match="not found"):
        load_model_service(str(tmp_path), str(tmp_path / "absent.py"), "-1")
    with pytest.raises(AttributeError, match="no function"):
        service.invoke_handler("nope", Input())
    assert sys.modules["my_handler"] is service.module
