"""A stand-in for DJL Serving's Java Python-engine front end, written from its source, per release.

Source: github.com/deepjavalibrary/djl-serving, tags v0.26.0, v0.27.0, v0.28.0,
``engines/python/src/main/java/ai/djl/python/engine/`` (paths below are
relative to it). Nothing here uses this package's codec: the wire bytes are
built and parsed with ``struct`` as the Java classes do, so the worker is
checked against Java's reading, not against its own.

What each piece mirrors:

* ``java_command`` / ``java_environment``: ``Connection.getPythonStartCmd``
  (non-MPI, Unix socket: ``python3 <engineCacheDir>/djl_python_engine.py
  --sock-type unix --sock-name <tmp>/djl_sock.<port> --model-dir <abs>
  --entry-point <ep> --device-id <n>``; identical in the three tags) and
  ``PyEnv.getEnvironmentVars`` (``PYTHONPATH=$PYTHONPATH:<engineCacheDir>:<modelDir>``);
  ``Connection.startPython`` runs it with the model folder as working directory.
* ``JavaWire``: ``Connection.RequestEncoder`` / ``OutputDecoder`` and
  ``CodecUtils``: counts and codes ``short``, blobs ``int`` length, strings
  ``short`` length in v0.26.0 and ``int`` from v0.27.0 (commit 89a22be3);
  a null content value is written as length 0 (v0.28.0).
* ``init_properties``: ``ModelInfo`` fills missing keys from ``OPTION_*``, from
  0.28 the LMI config recommender rewrites ``rolling_batch`` and
  ``tensor_parallel_degree``, and ``PyModel.load`` copies every ``option.*`` (prefix
  stripped) into the init parameters; ``PyProcess.startPythonProcess`` sends
  them in a content-free ``Input`` and ``PyProcess.predict`` adds
  ``handler=handle`` to every message that lacks one.
* ``java_rolls``: ``PyPredictor`` (v0.26.0: ``rolling_batch`` set; v0.27.0+:
  set and not ``disable``; v0.27.0+: a request with a ``handler`` property
  skips the loop).
* ``JavaRollingBatch``: ``RollingBatch.run`` / ``addInput`` /
  ``Request.addResponse``: all in-flight requests every step, ``batch_NNN.``
  prefixes, data/properties/seed only on a request's first step, the seed a
  signed ``RandomUtils.nextInt()``; a non-200 reply or a content count other
  than the batch size fails everything and sets ``reset_rollingbatch``;
  record ``i`` is content item ``i`` (keys ignored); JSON records (first byte
  ``{``) vs binary records; v0.27.0+ copies ``batch_<i>_<name>`` reply
  properties to request ``i``; ``removeIf(last)``.
* ``http_input``: ``serving/.../http/RequestParser.parseRequest`` (v0.28.0):
  headers become properties, the body is content ``data``; a form body is
  decoded into one content item per field.

Not modelled: timeouts, metrics, v0.26.0's 4-token output buffering
(``SERVING_ROLLING_BATCH_BUFFER``, which only regroups chunks), MPI mode.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote_plus

VERSIONS = ("0.26.0", "0.27.0", "0.28.0")


def _minor(version: str) -> int:
    return int(version.split(".")[1])


# -- launch ------------------------------------------------------------------------------------


def java_command(engine_dir: Path, model_dir: Path, sock_path: str, entry_point: str, device_id: int = -1,
                 python: str = sys.executable) -> list[str]:
    """``Connection.getPythonStartCmd`` for the non-MPI Unix-socket case (same in v0.26.0-v0.28.0)."""
    return [python, f"{engine_dir}/djl_python_engine.py", "--sock-type", "unix", "--sock-name", sock_path,
            "--model-dir", str(Path(model_dir).absolute()), "--entry-point", entry_point,
            "--device-id", str(device_id)]


def java_environment(engine_dir: Path, model_dir: Path, base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``PyEnv.getEnvironmentVars``: ``$PYTHONPATH:<engineCacheDir>:<modelDir>``, the rest inherited."""
    env = dict(os.environ if base is None else base)
    prefix = env["PYTHONPATH"] + os.pathsep if env.get("PYTHONPATH") else ""
    env["PYTHONPATH"] = f"{prefix}{engine_dir}{os.pathsep}{Path(model_dir).absolute()}"
    return env


def init_properties(serving_properties: str, version: str = "0.26.0", env: Optional[dict[str, str]] = None,
                    features: str = "", gpus: int = 0) -> dict[str, str]:
    """What Java sends in the initialising message for this ``serving.properties``.

    ``ModelInfo`` (v0.28.0 ``wlm/.../ModelInfo.java:793-811``) fills keys the file lacks from
    ``OPTION_*`` variables; from 0.28 the LMI config recommender then rewrites ``rolling_batch``
    and, where it runs, ``tensor_parallel_degree`` (``LmiConfigRecommender.java``: v0.28.0
    ``:90-138``, v0.29.0 ``:95-130``; see ``_recommend``); ``PyModel.load`` copies every
    ``option.*`` (prefix stripped). ``features`` is ``SERVING_FEATURES``, ``gpus`` the CUDA count.
    """
    props: dict[str, str] = {}
    for line in serving_properties.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().startswith("option."):
            props[key.strip()[len("option."):]] = value.strip()
    for key, value in (env or {}).items():
        if key.startswith("OPTION_") and value:
            name = key[len("OPTION_"):].lower()
            props.setdefault("entryPoint" if name == "entrypoint" else name, value)
    if _minor(version) >= 28:
        _recommend(props, version, features, gpus)
    return props


def _recommend(props: dict[str, str], version: str, features: str, gpus: int) -> None:
    """The recommender's ``rolling_batch`` and ``tensor_parallel_degree`` rules for a text
    generation model off SageMaker without other LMI features (v0.28.0
    ``LmiConfigRecommender.java:81-112, 129-138``; v0.29.0 ``:95-130``; 0.30.0-0.34.0 release
    branches ``setRollingBatch``; v0.35.0, v0.36.0 ``:46-78``)."""
    minor, tnx = _minor(version), "tnx" in features
    if int(props.get("batch_size", "1")) > 1:
        props["rolling_batch"] = "disable"
    else:
        default = "disable" if (tnx and minor == 29) else "auto"
        value = props.get("rolling_batch", default)
        if value == "auto":
            if minor >= 35 or not tnx:
                value = "disable"
            elif 30 <= minor <= 34 and int(props.get("max_rolling_batch_size", "1")) >= 12:
                value = "vllm"
            else:
                value = "tnx"
        props["rolling_batch"] = value
    if "tensor_parallel_degree" not in props and (minor == 28 or gpus > 0):
        props["tensor_parallel_degree"] = str(gpus)


def java_rolls(model_properties: dict[str, str], version: str) -> bool:
    """``PyPredictor``'s constructor."""
    value = model_properties.get("rolling_batch")
    if _minor(version) < 27:
        return value is not None
    return value is not None and value != "disable"


# -- wire ----------------------------------------------------------------------------------------


@dataclass
class JavaInput:
    """``ai.djl.modality.Input``: properties (a map) and content (an ordered pair list)."""

    properties: dict[str, str] = field(default_factory=dict)
    content: list[tuple[Optional[str], Optional[bytes]]] = field(default_factory=list)

    def get_data(self) -> bytes:
        """``Input.getData()``: content ``data``, else the first item."""
        for key, value in self.content:
            if key == "data":
                return value or b""
        return (self.content[0][1] or b"") if self.content else b""


@dataclass
class JavaOutput:
    code: int
    message: Optional[str]
    properties: dict[str, Optional[str]]
    content: list[tuple[Optional[str], bytes]]
    chunks: Optional[list[bytes]] = None  # a streamed reply (content size -1)


class JavaWire:
    """``RequestEncoder`` / ``OutputDecoder`` of one DJL release over a connected socket."""

    def __init__(self, sock: socket.socket, version: str) -> None:
        self.sock = sock
        self.version = version
        self.str_fmt = ">h" if _minor(version) < 27 else ">i"  # CodecUtils.readUtf8/writeUtf8

    def _str(self, value: Optional[str]) -> bytes:
        if value is None:
            return struct.pack(self.str_fmt, -1)
        data = value.encode("utf-8")
        return struct.pack(self.str_fmt, len(data)) + data

    def encode(self, inp: JavaInput) -> bytes:
        # PyProcess.predict adds handler=handle to any message without one.
        props = dict(inp.properties)
        props.setdefault("handler", "handle")
        out = struct.pack(">h", len(props))
        for k, v in props.items():
            out += self._str(k) + self._str(v)
        out += struct.pack(">h", len(inp.content))
        for k, v in inp.content:
            out += self._str(k)
            out += struct.pack(">i", len(v or b"")) + (v or b"")
        return out

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("python worker disconnected")
            buf += chunk
        return buf

    def _read_str(self) -> Optional[str]:
        size = struct.calcsize(self.str_fmt)
        (n,) = struct.unpack(self.str_fmt, self._exact(size))
        return None if n < 0 else self._exact(n).decode("utf-8")

    def _read_bytes(self) -> bytes:
        (n,) = struct.unpack(">i", self._exact(4))
        return b"" if n < 0 else self._exact(n)

    def send(self, inp: JavaInput) -> JavaOutput:
        self.sock.sendall(self.encode(inp))
        return self.read_output()

    def read_output(self) -> JavaOutput:
        """``OutputDecoder.decode`` of one reply."""
        (code,) = struct.unpack(">h", self._exact(2))
        message = self._read_str()
        (n_props,) = struct.unpack(">h", self._exact(2))
        props = {}
        for _ in range(n_props):
            key = self._read_str()
            props[key] = self._read_str()
        (n_content,) = struct.unpack(">h", self._exact(2))
        if n_content == -1:  # ChunkedBytesSupplier: byte more, int len, bytes
            chunks, more = [], True
            while more:
                more = self._exact(1) == b"\x01"
                chunks.append(self._read_bytes())
            return JavaOutput(code, message, props, [(None, b"".join(chunks))], chunks)
        content = []
        for _ in range(n_content):
            key = self._read_str()
            content.append((key, self._read_bytes()))
        return JavaOutput(code, message, props, content)


def http_input(body: bytes | str, content_type: str = "application/json",
               headers: Optional[dict[str, str]] = None) -> JavaInput:
    """``RequestParser.parseRequest``: headers -> properties, body -> ``data`` (form: one item per field)."""
    raw = body.encode() if isinstance(body, str) else body
    props = {"content-type": content_type, "host": "127.0.0.1:8080", "content-length": str(len(raw))}
    props.update(headers or {})
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        items = []
        for part in raw.decode().split("&"):
            name, _, value = part.partition("=")
            items.append((unquote_plus(name), unquote_plus(value).encode()))
        return JavaInput(props, items)
    return JavaInput(props, [("data", raw)])


# -- RollingBatch.java ------------------------------------------------------------------------------


@dataclass
class JavaRequest:
    """``RollingBatch.Request``: the client's stream of chunks and the response's code/headers."""

    name: str
    input: JavaInput
    seed: str
    started: bool = False  # v0.26.0 tests count > 0, v0.27.0+ nextToken != null: both "answered once"
    chunks: list[bytes] = field(default_factory=list)
    lasts: list[bool] = field(default_factory=list)  # each record's "last", in order
    last: bool = False
    code: int = 200
    message: Optional[str] = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8")

    @property
    def error(self) -> Optional[dict]:
        """The ``{"code", "error"}`` JSON Java appended for a failed request (binary branch), if any."""
        if self.chunks:
            try:
                doc = json.loads(self.chunks[-1])
            except ValueError:
                return None
            if isinstance(doc, dict) and "code" in doc and set(doc) <= {"code", "error"}:
                return doc
        return None


class JavaRollingBatch:
    """Drive ``send(JavaInput) -> JavaOutput`` exactly as ``RollingBatch.run`` of ``version`` would."""

    def __init__(self, send: Callable[[JavaInput], JavaOutput], version: str = "0.28.0", seed: int = 7,
                 output_formatter: Optional[str] = None) -> None:
        self.send = send
        self.version = version
        self.in_flight: list[JavaRequest] = []
        self.done: dict[str, JavaRequest] = {}
        self.reset_next = False
        self.failed_batches = 0
        self._random = random.Random(seed)
        # v0.26.0 only: the response Content-Type comes from the model's output_formatter.
        self._v26_content_type = {None: "application/json", "json": "application/json",
                                  "jsonlines": "application/jsonlines"}.get(output_formatter)

    def add(self, name: str, inp: JavaInput) -> JavaRequest:
        """``addInput``: the seed is ``String.valueOf(RandomUtils.nextInt())``, negative as often as not."""
        req = JavaRequest(name, inp, str(self._random.randint(-(2**31), 2**31 - 1)))
        if _minor(self.version) < 27 and self._v26_content_type:
            req.headers["Content-Type"] = self._v26_content_type
        self.in_flight.append(req)
        return req

    def build_input(self) -> JavaInput:
        batch = JavaInput()
        if self.reset_next:
            batch.properties["reset_rollingbatch"] = "true"
            self.reset_next = False
        for i, req in enumerate(self.in_flight):
            prefix = f"batch_{i}." if i > 99 else f"batch_0{i}." if i > 9 else f"batch_00{i}."
            if not req.started:
                for k, v in req.input.properties.items():
                    batch.properties[prefix + k] = v
            batch.content.append((prefix + "data", req.input.get_data() if not req.started else b""))
            if not req.started:
                batch.content.append((prefix + "seed", req.seed.encode()))
        batch.properties["batch_size"] = str(len(self.in_flight))
        return batch

    def step(self) -> JavaOutput:
        size = len(self.in_flight)
        out = self.send(self.build_input())
        if out.code != 200 or len(out.content) != size:
            self.failed_batches += 1
            for req in self.in_flight:
                req.last, req.code, req.message = True, out.code, "Batch inference failed"
                self.done[req.name] = req
            self.in_flight.clear()
            self.reset_next = True
            return out
        per_request: dict[int, dict[str, str]] = {}
        if _minor(self.version) >= 27:
            for key, value in out.properties.items():
                if key.startswith("batch_"):
                    pos = key.find("_", 7)
                    if pos > 0:
                        per_request.setdefault(int(key[6:pos]), {})[key[pos + 1:]] = value
        for i, req in enumerate(self.in_flight):
            req.headers.update(per_request.get(i, {}))
            self._add_response(req, out.content[i][1])
        for req in [r for r in self.in_flight if r.last]:
            self.done[req.name] = req
        self.in_flight = [r for r in self.in_flight if not r.last]
        return out

    def _add_response(self, req: JavaRequest, record: bytes) -> None:
        """``Request.addResponse``."""
        req.started = True
        if record[:1] == b"{":
            element = json.loads(record)
            req.last = bool(element["last"])  # getAsBoolean
            token = element["data"]
            if not isinstance(token, str):
                raise TypeError("JSON record 'data' is not a string")  # getAsString would throw
            try:
                inner = json.loads(token)
                req.code, req.message = int(inner["code"]), str(inner["error"])
            except (ValueError, TypeError, KeyError):
                pass
            req.chunks.append(token.encode("utf-8"))
            req.lasts.append(req.last)
            return
        fmt = ">h" if _minor(self.version) < 27 else ">i"
        (count,) = struct.unpack_from(">h", record, 0)
        pos, fields = 2, {}
        for _ in range(count * 2):
            (n,) = struct.unpack_from(fmt, record, pos)
            pos += struct.calcsize(fmt)
            if n < 0:
                raise ValueError("null string in a binary record (Objects.requireNonNull)")
            fields.setdefault("_items", []).append(record[pos:pos + n].decode("utf-8"))
            pos += n
        if pos != len(record):
            raise ValueError(f"binary record has {len(record) - pos} trailing bytes")
        items = fields.get("_items", [])
        values = dict(zip(items[0::2], items[1::2]))
        if "last" in values:
            req.last = values["last"].lower() == "true"
        if 29 <= _minor(self.version) <= 31 and not values.get("data") and "code" not in values:
            # v0.29.0 RollingBatch.java:356-359: an empty record without code is dropped, even the
            # last one; the request leaves the loop but its client's stream never ends.
            return
        if "code" in values:
            err = {"code": int(values["code"])}
            if "error" in values:
                err["error"] = values["error"]
            req.chunks.append(json.dumps(err, separators=(",", ":")).encode())
        else:
            req.chunks.append(values.get("data", "").encode("utf-8"))
        req.lasts.append(req.last)

    def run(self, arrivals: dict[int, list[tuple[str, JavaInput]]], max_steps: int = 500) -> dict[str, JavaRequest]:
        """Step until idle; ``arrivals[step]`` lists requests added before that step."""
        step = 0
        while (self.in_flight or any(k >= step for k in arrivals)) and step < max_steps:
            for name, inp in arrivals.get(step, []):
                self.add(name, inp)
            if self.in_flight:
                self.step()
            step += 1
        if self.in_flight:
            raise AssertionError("requests still in flight after max_steps")
        return self.done


class Loopback:
    """A socket stand-in over a byte buffer: what one side ``sendall``s, the other ``recv``s."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0

    def sendall(self, data: bytes) -> None:
        self.buf += bytes(data)

    def recv(self, n: int) -> bytes:
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def in_process(handle: Callable, version: str, model_dir: str = "") -> Callable[[JavaInput], JavaOutput]:
    """``send`` for an in-process handler: Java's bytes -> the package's ``Input`` -> ``handle`` -> Java's reading.

    Both directions go through the wire as Java writes and reads it; the worker
    side must already speak ``version`` (``djl_python.djl.protocol.activate``).
    """
    from djl_python.inputs import Input
    from djl_python.outputs import Output

    def send(inp: JavaInput) -> JavaOutput:
        to_python, to_java = Loopback(), Loopback()
        to_python.sendall(JavaWire(to_python, version).encode(inp))
        received = Input().read(to_python)
        received.properties["model_dir"] = model_dir
        out = handle(received)
        (out if out is not None else Output(204, "No content")).send(to_java)
        return JavaWire(to_java, version).read_output()

    return send
