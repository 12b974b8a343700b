"""Primitives of DJL's Java <-> Python wire format (big-endian throughout).

A string is ``int32 length`` + UTF-8 bytes, ``-1`` meaning null; counts are
``int16``; byte blobs are ``int32 length`` + bytes. ``Input``/``Output`` build
their messages from these; the reader side works on any ``recv``-able socket
or on a byte buffer (``BufferReader``) so the codec is testable without one.
"""

from __future__ import annotations

import struct
from typing import Optional, Protocol


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
    length = read_int(conn)
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
    if value is None:
        write_int(buf, -1)
        return
    data = value.encode("utf-8")
    write_int(buf, len(data))
    buf += data


def write_blob(buf: bytearray, value: bytes) -> None:
    write_int(buf, len(value))
    buf += value


def check_count(what: str, n: int) -> None:
    """Counts travel as int16; more than 32767 items cannot be framed."""
    if not 0 <= n <= 0x7FFF:
        raise ValueError(f"too many {what} for the DJL frame: {n}")
