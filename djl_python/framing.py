"""Primitives of DJL's Java <-> Python wire format (big-endian throughout).

A string is a length + UTF-8 bytes, ``-1`` meaning null; counts are
``int16``; byte blobs are ``int32 length`` + bytes. ``Input``/``Output`` build
their messages from these; the reader side works on any ``recv``-able socket
or on a byte buffer (``BufferReader``) so the codec is testable without one.

The string length is the one thing that changed between DJL releases: DJL
0.26 frames it as ``int16``, 0.27 and later as ``int32`` (djl-serving commit
89a22be3, "Allows send more than 32k utf-8 string": ``CodecUtils.readUtf8`` /
``writeUtf8`` and ``inputs.py``/``outputs.py`` switched from short to int).
The width is process-wide, chosen once at start-up by the engine launcher
(``djl_python.djl.protocol``); it defaults to ``int32``.
"""

from __future__ import annotations

import struct
from typing import Optional, Protocol


STRING_LENGTH_FORMATS = {2: ">h", 4: ">i"}
_string_length_bytes = 4


def set_string_length_bytes(nbytes: int) -> None:
    """Frame every string with an ``int16`` (2, DJL 0.26) or ``int32`` (4, DJL >= 0.27) length."""
    global _string_length_bytes
    if nbytes not in STRING_LENGTH_FORMATS:
        raise ValueError(f"string length must be 2 (int16) or 4 (int32) bytes, got {nbytes}")
    _string_length_bytes = nbytes


def string_length_bytes() -> int:
    return _string_length_bytes


class ConnectionClosed(EOFError):
    """The peer closed the connection (cleanly between messages, or mid-message)."""


class Readable(Protocol):
    def recv(self, n: int) -> bytes: ...


class BufferReader:
    """A ``recv``-compatible view of a byte string (for decoding in tests and tools)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    def recv(self, n: int) -> bytes:
        chunk = self._data[self._pos : self._pos + n].tobytes()
        self._pos += len(chunk)
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos


def read_exact(conn: Readable, length: int) -> bytes:
    buf = bytearray()
    while len(buf) < length:
        chunk = conn.recv(length - len(buf))
        if not chunk:
            raise ConnectionClosed(f"connection closed after {len(buf)} of {length} bytes")
        buf += chunk
    return bytes(buf)


def read_short(conn: Readable) -> int:
    return struct.unpack(">h", read_exact(conn, 2))[0]


def read_int(conn: Readable) -> int:
    return struct.unpack(">i", read_exact(conn, 4))[0]


def read_byte(conn: Readable) -> int:
    return read_exact(conn, 1)[0]


def read_str(conn: Readable) -> Optional[str]:
    n = _string_length_bytes
    length = struct.unpack(STRING_LENGTH_FORMATS[n], read_exact(conn, n))[0]
    if length < 0:
        return None
    return read_exact(conn, length).decode("utf-8")


def read_blob(conn: Readable) -> bytes:
    length = read_int(conn)
    if length < 0:
        raise ValueError(f"negative content length {length}")
    return read_exact(conn, length)


def write_short(buf: bytearray, value: int) -> None:
    buf += struct.pack(">h", value)


def write_int(buf: bytearray, value: int) -> None:
    buf += struct.pack(">i", value)


def write_str(buf: bytearray, value: Optional[str]) -> None:
    fmt = STRING_LENGTH_FORMATS[_string_length_bytes]
    if value is None:
        buf += struct.pack(fmt, -1)
        return
    data = value.encode("utf-8")
    if _string_length_bytes == 2 and len(data) > 0x7FFF:
        # DJL 0.26 cannot carry it; failing here beats a corrupt frame that desynchronises Java.
        raise ValueError(f"a {len(data)}-byte string does not fit DJL 0.26's int16 string length")
    buf += struct.pack(fmt, len(data))
    buf += data


def write_blob(buf: bytearray, value: bytes) -> None:
    write_int(buf, len(value))
    buf += value


def check_count(what: str, n: int) -> None:
    """Counts travel as int16; more than 32767 items cannot be framed."""
    if not 0 <= n <= 0x7FFF:
        raise ValueError(f"too many {what} for the DJL frame: {n}")
