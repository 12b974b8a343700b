"""``Output``: one reply from this Python worker to DJL Serving's Java front end.

Wire layout (big-endian, see ``djl_python.framing``)::

    int16 code, str message, int16 n_props, n x (key str, value str),
    int16 n_content, n x (key str, int32 len, bytes)

Streaming replies send ``n_content = -1`` and then frames
``byte more (1|0), int32 len, bytes``; the end frame is ``0, len 0`` and a
failure mid-stream ends with ``0`` plus the error message.

Rolling batch replies carry one content item per in-flight request whose
value is ``Output.binary_encode({"data", "last", ["code", "error"]})``
(DJL >= 0.28; ``djl_python.djl.records`` writes the older JSON records).

The API is the one custom handlers written for DJL use (djl-serving
v0.26.0-v0.28.0, ``engines/python/setup/djl_python/outputs.py``): ``add``,
``add_as_json``, ``add_as_numpy``, ``add_as_npz``, ``add_property``,
``set_code``, ``set_message``, ``error``, ``finalize``/``execute_finalize``,
``add_stream_content(stream, output_formatter=...)`` whose default wraps each
item as ``{"outputs": item}`` plus a newline, and JSON that encodes numpy
scalars/arrays and datetimes, written as DJL writes it (indent 2, no space
after ``:``).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Callable, Iterator, Optional

from djl_python.framing import (
    BufferReader,
    Readable,
    check_count,
    read_blob,
    read_byte,
    read_short,
    read_str,
    write_blob,
    write_int,
    write_short,
    write_str,
)
from djl_python.pair_list import PairList

logger = logging.getLogger(__name__)


class _JSONEncoder(json.JSONEncoder):
    """numpy scalars and arrays, and datetimes, as DJL's encoder writes them."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, datetime.datetime):
            return str(obj)
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is a dependency
            np = None
        if np is not None:
            if isinstance(obj, np.integer):
                return int(obj)
            if isinstance(obj, np.floating):
                return float(obj)
            if isinstance(obj, np.ndarray):
                return obj.tolist()
        return super().default(obj)


def _json_bytes(value: Any) -> bytes:
    # DJL's Output._encode_json layout (indent 2, "," and ":" separators), so bytes match its handler's.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=2, cls=_JSONEncoder,
                      separators=(",", ":")).encode("utf-8")


def _default_stream_output_formatter(token_texts: Any) -> bytes:
    """DJL's default stream wrapping: ``{"outputs": item}`` and a newline."""
    return (json.dumps({"outputs": token_texts}, cls=_JSONEncoder) + "\n").encode("utf-8")


class Output:
    """A response: HTTP-like code and message, string properties, byte content or a stream."""

    def __init__(self, code: int = 200, message: str = "OK") -> None:
        self.code = code
        self.message = message
        self.properties: dict[str, str] = {}
        self.content: PairList[bytes] = PairList()
        self.stream_content: Optional[Iterator[Any]] = None
        self.stream_output_formatter: Optional[Callable[[Any], Any]] = None
        self.finalize_function: Optional[Callable[..., Any]] = None
        self.finalize_args: tuple[Any, ...] = ()
        self.stream_frames: Optional[list[bytes]] = None  # set by read() for a streamed reply

    def set_code(self, code: int) -> "Output":
        self.code = code
        return self

    def set_message(self, message: str) -> "Output":
        self.message = message
        return self

    def add_property(self, key: str, value: Any) -> "Output":
        self.properties[key] = str(value)
        return self

    def get_properties(self) -> dict[str, str]:
        return self.properties

    def add(self, value: Any, key: Optional[str] = None, batch_index: Optional[int] = None) -> "Output":
        """Append content: ``str`` as UTF-8, bytes as is, anything else as JSON.

        ``batch_index`` prefixes the key as ``batch_<i>.`` (index not zero-padded).
        """
        if batch_index is not None:
            key = f"batch_{batch_index}.{key or ''}"
        if isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            data = _json_bytes(value)
        self.content.add(key, data)
        return self

    def add_as_json(self, value: Any, key: Optional[str] = None, batch_index: Optional[int] = None) -> "Output":
        return self.add(_json_bytes(value), key=key, batch_index=batch_index)

    def add_as_numpy(self, arrays: Any, key: Optional[str] = None, batch_index: Optional[int] = None) -> "Output":
        """Append numpy arrays as a DJL NDList (``tensor/ndlist``)."""
        from djl_python.np_util import to_nd_list

        return self.add(to_nd_list(arrays), key=key, batch_index=batch_index)

    def add_as_npz(self, arrays: Any, key: Optional[str] = None, batch_index: Optional[int] = None) -> "Output":
        """Append numpy arrays as an ``.npz`` archive (``tensor/npz``), in order (``arr_0``, ``arr_1``, ...)."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, *arrays)
        return self.add(buf.getvalue(), key=key, batch_index=batch_index)

    def add_stream_content(self, stream: Iterator[Any],
                           output_formatter: Optional[Callable[[Any], Any]] = _default_stream_output_formatter) -> "Output":
        """Send ``stream``'s items as frames.

        Each item goes through ``output_formatter`` first; DJL's default (used
        when the argument is omitted) wraps it as ``{"outputs": item}`` plus a
        newline. Pass ``output_formatter=None`` explicitly to send items as they
        are. Formatted ``str``/bytes are sent as is, anything else as JSON.
        """
        self.stream_content = stream
        self.stream_output_formatter = output_formatter
        return self

    def error(self, error: str, code: int = 424, message: str = "prediction failure") -> "Output":
        """Turn this into DJL's error reply: ``{"code", "message", "error"}`` as JSON."""
        self.code = code
        self.message = message
        self.add_property("content-type", "application/json")
        self.add_as_json({"code": code, "message": message, "error": error})
        return self

    def finalize(self, finalize_function: Callable[..., Any], *args: Any) -> "Output":
        """Run ``finalize_function(*args)`` after this reply has been sent (``execute_finalize``)."""
        self.finalize_function = finalize_function
        self.finalize_args = args
        return self

    def execute_finalize(self) -> Any:
        """Called by the engine loop once the reply is on the wire; a no-op without ``finalize``."""
        if self.finalize_function is not None:
            return self.finalize_function(*self.finalize_args)
        return None

    @staticmethod
    def binary_encode(data: dict[str, Any]) -> bytes:
        """``int16 n`` + n x (key str, ``str(value)``): the per-request rolling-batch record.

        Java reads ``data``, ``last`` (case-insensitive "true"), ``code`` and ``error``.
        """
        buf = bytearray()
        check_count("fields", len(data))
        write_short(buf, len(data))
        for k, v in data.items():
            write_str(buf, k)
            write_str(buf, None if v is None else str(v))
        return bytes(buf)

    @staticmethod
    def binary_decode(data: bytes) -> dict[str, Optional[str]]:
        """Inverse of ``binary_encode`` (what Java's ``Request.addResponse`` reads)."""
        reader = BufferReader(data)
        out: dict[str, Optional[str]] = {}
        for _ in range(read_short(reader)):
            key = read_str(reader)
            out[key] = read_str(reader)  # type: ignore[index]
        return out

    def _header(self, n_content: int) -> bytearray:
        buf = bytearray()
        write_short(buf, self.code)
        write_str(buf, self.message)
        check_count("properties", len(self.properties))
        write_short(buf, len(self.properties))
        for k, v in self.properties.items():
            write_str(buf, k)
            write_str(buf, v)
        write_short(buf, n_content)
        return buf

    def encode(self) -> bytes:
        """The whole non-streaming reply."""
        if self.stream_content is not None:
            raise ValueError("a streaming Output is sent with send(), not encoded at once")
        check_count("content items", self.content.size())
        buf = self._header(self.content.size())
        for k, v in self.content:
            write_str(buf, k)
            write_blob(buf, v)
        return bytes(buf)

    def send(self, conn: Any) -> None:
        """Write this reply to a socket (``sendall``), streaming frames if it has a stream."""
        if self.stream_content is None:
            conn.sendall(self.encode())
            return
        conn.sendall(bytes(self._header(-1)))
        while True:
            try:
                item = next(self.stream_content)
                if self.stream_output_formatter is not None:
                    item = self.stream_output_formatter(item)
            except StopIteration:
                conn.sendall(_frame(False, b""))
                return
            except Exception as e:  # the stream failed: Java reads the message as the last chunk
                logger.exception("streaming output failed")
                conn.sendall(_frame(False, str(e).encode("utf-8")))
                return
            conn.sendall(_frame(True, _to_bytes(item)))

    @classmethod
    def read(cls, conn: Readable) -> "Output":
        """Decode one reply as Java's ``OutputDecoder`` does; stream frames become one content item.

        For a streamed reply the frames are joined into content ``None`` (as Java's
        ``ChunkedBytesSupplier``) and ``stream_frames`` keeps each frame.
        """
        out = cls(read_short(conn), read_str(conn) or "")
        for _ in range(read_short(conn)):
            key = read_str(conn)
            out.properties[key] = read_str(conn)  # type: ignore[index]
        n = read_short(conn)
        if n == -1:
            frames = []
            more = True
            while more:
                more = read_byte(conn) == 1
                frames.append(read_blob(conn))
            out.stream_frames = frames
            out.content.add(None, b"".join(frames))
            return out
        for _ in range(n):
            key = read_str(conn)
            out.content.add(key, read_blob(conn))
        return out

    def __repr__(self) -> str:
        return f"Output(code={self.code}, message={self.message!r}, properties={self.properties!r}, content_keys={self.content.get_keys()!r})"


def _frame(more: bool, data: bytes) -> bytes:
    buf = bytearray(b"\x01" if more else b"\x00")
    write_int(buf, len(data))
    buf += data
    return bytes(buf)


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    return _json_bytes(item)
