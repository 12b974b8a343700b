"""DJL wire framing, checked byte for byte against the documented big-endian layout."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest

from djl_python.framing import BufferReader, ConnectionClosed
from djl_python.inputs import Input
from djl_python.outputs import Output
from djl_python.pair_list import PairList


def s(value: str | None) -> bytes:
    """A DJL string: int32 length + UTF-8, -1 for null (written independently of the code under test)."""
    if value is None:
        return struct.pack(">i", -1)
    data = value.encode("utf-8")
    return struct.pack(">i", len(data)) + data


def blob(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def h(n: int) -> bytes:
    return struct.pack(">h", n)


def test_input_decodes_documented_layout_with_unicode_duplicates_and_empty_content():
    wire = (
        h(2) + s("Content-Type") + s("application/json") + s("héllo") + s("wörld 😀")
        + h(3) + s("data") + blob(b'{"inputs": "x"}') + s("data") + blob(b"second") + s("empty") + blob(b"")
    )
    inp = Input().read(BufferReader(wire))
    assert inp.get_properties() == {"Content-Type": "application/json", "héllo": "wörld 😀"}
    assert inp.content.get_keys() == ["data", "data", "empty"]
    assert inp.get_as_json() == {"inputs": "x"}  # the first "data" wins
    assert inp.content.value_at(1) == b"second"
    assert inp.get_as_bytes("empty") == b""
    assert inp.contains_key("empty") and not inp.contains_key("missing")
    assert inp.get_property("content-type") == "application/json"
    assert inp.encode() == wire  # and back, byte-exact


def test_input_null_property_value_and_no_content():
    wire = h(1) + s("k") + s(None) + h(0)
    inp = Input().read(BufferReader(wire))
    assert inp.get_properties() == {"k": None}
    assert inp.is_empty() and inp.get_as_bytes() is None
    assert inp.encode() == wire


def test_truncated_input_raises_connection_closed():
    wire = h(1) + s("key") + s("value")[:3]
    with pytest.raises(ConnectionClosed):
        Input().read(BufferReader(wire))
    with pytest.raises(ConnectionClosed):
        Input().read(BufferReader(b""))


def test_output_encodes_documented_layout():
    out = Output(code=200, message="OK")
    out.add_property("batch_0_Content-Type", "application/jsonlines")
    out.add("ünï", key="batch_0.data")
    out.add(b"\x00\x01", key="batch_0.data")  # duplicates allowed, order kept
    out.add({"a": [1, "é"]}, key=None)
    expected = (
        h(200) + s("OK") + h(1) + s("batch_0_Content-Type") + s("application/jsonlines")
        + h(3) + s("batch_0.data") + blob("ünï".encode()) + s("batch_0.data") + blob(b"\x00\x01")
        + s(None) + blob('{\n  "a":[\n    1,\n    "é"\n  ]\n}'.encode())  # DJL's indent=2 JSON
    )
    assert out.encode() == expected
    back = Output.read(BufferReader(expected))
    assert (back.code, back.message, back.properties) == (200, "OK", {"batch_0_Content-Type": "application/jsonlines"})
    assert list(back.content) == list(out.content)


def test_output_error_body():
    out = Output().error("boom", code=424)
    assert out.code == 424 and out.message == "prediction failure"
    assert json.loads(out.content.value_at(0)) == {"code": 424, "message": "prediction failure", "error": "boom"}
    assert out.properties == {"content-type": "application/json"}  # DJL's spelling


def test_binary_encode_matches_layout_and_java_reader():
    record = Output.binary_encode({"data": 'tök "x"', "last": True, "code": 400, "error": "bad"})
    expected = h(4) + s("data") + s('tök "x"') + s("last") + s("True") + s("code") + s("400") + s("error") + s("bad")
    assert record == expected
    assert Output.binary_decode(record) == {"data": 'tök "x"', "last": "True", "code": "400", "error": "bad"}


def test_streaming_frames_over_a_real_socket():
    left, right = socket.socketpair()
    out = Output(code=200, message="OK").add_property("Content-Type", "text/plain")

    def items():
        yield "héllo "
        yield b"world"
        yield {"n": 1}

    out.add_stream_content(items(), output_formatter=None)  # items as they are
    threading.Thread(target=out.send, args=(left,), daemon=True).start()
    expected = (
        h(200) + s("OK") + h(1) + s("Content-Type") + s("text/plain") + h(-1)
        + b"\x01" + blob("héllo ".encode()) + b"\x01" + blob(b"world") + b"\x01" + blob(b'{\n  "n":1\n}')
        + b"\x00" + struct.pack(">i", 0)
    )
    got = b""
    right.settimeout(5)
    while len(got) < len(expected):
        chunk = right.recv(4096)
        assert chunk, "stream ended early"
        got += chunk
    assert got == expected
    back = Output.read(BufferReader(got))
    assert back.stream_frames == ["héllo ".encode(), b"world", b'{\n  "n":1\n}', b""]
    left.close()
    right.close()


def test_streaming_failure_ends_with_error_frame():
    class Sink:
        data = b""

        def sendall(self, b: bytes) -> None:
            self.data += b

    def items():
        yield "a"
        raise RuntimeError("stream broke")

    sink = Sink()
    Output().add_stream_content(items(), output_formatter=None).send(sink)
    assert sink.data.endswith(b"\x00" + blob(b"stream broke"))


def test_get_batches_splits_java_envelope():
    inp = Input(
        properties={
            "batch_size": "3",
            "reset_rollingbatch": "true",
            "batch_000.Content-Type": "application/json",
            "batch_002.X-Custom": "v",
        },
        content=PairList(pair_list=[("batch_000.data", b"{}"), ("batch_000.seed", b"17"), ("batch_001.data", b""),
                          ("batch_002.data", b"plain")]),
    )
    parts = inp.get_batches()
    assert inp.is_batch() and inp.get_batch_size() == 3 and len(parts) == 3
    assert parts[0].get_properties() == {"Content-Type": "application/json"}
    assert parts[0].get_as_string("seed") == "17" and parts[0].get_as_bytes() == b"{}"
    assert parts[1].get_properties() == {} and parts[1].get_as_bytes() == b""
    assert parts[2].get_property("x-custom") == "v" and parts[2].get_as_string() == "plain"


def test_get_batches_rejects_index_outside_batch_and_passes_through_single():
    single = Input(content=PairList(pair_list=[("data", b"x")]))
    assert single.get_batches() == [single] and not single.is_batch()
    bad = Input(properties={"batch_size": "1"}, content=PairList(pair_list=[("batch_001.data", b"x")]))
    with pytest.raises(ValueError, match="batch_001.data"):
        bad.get_batches()


def test_pair_list_keeps_order_and_duplicates():
    pl: PairList[int] = PairList()
    pl.add("a", 1)
    pl.add("b", 2)
    pl.add("a", 3)
    assert pl.get("a") == 1 and pl.get_keys() == ["a", "b", "a"] and pl.get_values() == [1, 2, 3]
    assert pl.get("zzz") is None and len(pl) == 3


def test_nd_list_matches_documented_layout_and_round_trips():
    np = pytest.importorskip("numpy")
    arr = np.array([1, -2], dtype=np.int32)
    short = lambda v: struct.pack(">h", len(v)) + v.encode()  # noqa: E731
    expected = (
        struct.pack(">i", 1) + short("NDAR") + struct.pack(">i", 3) + b"\x00" + short("default") + short("INT32")
        + struct.pack(">i", 1) + struct.pack(">q", 2) + struct.pack(">i", 1) + struct.pack(">h", ord("?"))
        + b"<" + struct.pack(">i", 8) + struct.pack("<ii", 1, -2)
    )
    out = Output().add_as_numpy([arr], key="data")
    assert out.content.get("data") == expected
    inp = Input(content=PairList(pair_list=[("data", expected)]))
    (back,) = inp.get_as_numpy()
    assert back.dtype == np.int32 and back.tolist() == [1, -2]
    mixed = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False]), np.zeros((0,), np.float16)]
    from djl_python.np_util import from_nd_list, to_nd_list

    for a, b in zip(mixed, from_nd_list(to_nd_list(mixed))):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()
    with pytest.raises(ValueError, match="magic"):
        from_nd_list(struct.pack(">i", 1) + short("XXXX"))


def test_npz_content_is_read_as_arrays():
    np = pytest.importorskip("numpy")
    import io

    buf = io.BytesIO()
    np.savez(buf, np.array([3.5], dtype=np.float64))
    (back,) = Input(content=PairList(pair_list=[("data", buf.getvalue())])).get_as_numpy()
    assert back.tolist() == [3.5]
