"""DJL ``NDList`` binary encoding (``tensor/ndlist``), for tensor in/out over the DJL protocol.

Layout (big-endian; a "short string" is ``int16 length`` + UTF-8)::

    int32 count, then per array:
      short-str "NDAR", int32 version (3), byte has_name [short-str name],
      short-str sparse format ("default"), short-str DJL data type ("FLOAT32"),
      int32 ndim, ndim x int64 dims, int32 layout length, layout x int16 char ('?'),
      byte byte-order ('<' or '>'), int32 data length, data (C order)

Bytes that start with ``PK`` are an ``.npz`` archive instead. Not used for LLM
text; kept so tensor clients of DJL Serving work with this worker.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Sequence

from djl_python.framing import BufferReader, read_byte, read_exact, read_int

MAGIC = "NDAR"
VERSION = 3
# numpy dtype name <-> DJL DataType name (DJL's bool is BOOLEAN, not BOOL).
_TO_DJL = {"float32": "FLOAT32", "float64": "FLOAT64", "float16": "FLOAT16", "uint8": "UINT8", "int8": "INT8",
           "int32": "INT32", "int64": "INT64", "bool": "BOOLEAN"}
_FROM_DJL = {v: k for k, v in _TO_DJL.items()}


def _short_str(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">h", len(data)) + data


def _read_short_str(reader: BufferReader) -> str:
    (length,) = struct.unpack(">h", read_exact(reader, 2))
    return read_exact(reader, length).decode("utf-8")


def to_nd_list(arrays: Any) -> bytes:
    """Encode a numpy array or a sequence of them. Raises ``ValueError`` for an unsupported dtype."""
    import numpy as np

    items: Sequence[Any] = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
    buf = bytearray(struct.pack(">i", len(items)))
    for arr in items:
        arr = np.asarray(arr)
        name = _TO_DJL.get(arr.dtype.name)
        if name is None:
            raise ValueError(f"dtype {arr.dtype} has no DJL equivalent; expected one of {sorted(_TO_DJL)}")
        buf += _short_str(MAGIC) + struct.pack(">i", VERSION) + b"\x00"  # no name
        buf += _short_str("default") + _short_str(name)
        buf += struct.pack(">i", arr.ndim) + b"".join(struct.pack(">q", d) for d in arr.shape)
        buf += struct.pack(">i", arr.ndim) + b"".join(struct.pack(">h", ord("?")) for _ in arr.shape)
        data = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).tobytes()
        buf += b"<" + struct.pack(">i", len(data)) + data
    return bytes(buf)


def from_nd_list(data: bytes) -> list[Any]:
    """Decode an NDList (or an ``.npz`` archive). Raises ``ValueError`` for malformed input."""
    import numpy as np

    if data[:2] == b"PK":
        with np.load(io.BytesIO(data)) as npz:
            return [npz[name] for name in npz.files]
    reader = BufferReader(data)
    out = []
    for _ in range(read_int(reader)):
        magic = _read_short_str(reader)
        if magic != MAGIC:
            raise ValueError(f"not an NDArray record: magic {magic!r}")
        version = read_int(reader)
        if version != VERSION:
            raise ValueError(f"unsupported NDArray version {version}, expected {VERSION}")
        if read_byte(reader) == 1:
            _read_short_str(reader)  # array name, unused
        _read_short_str(reader)  # sparse format
        djl_type = _read_short_str(reader)
        dtype = _FROM_DJL.get(djl_type)
        if dtype is None:
            raise ValueError(f"unsupported DJL data type {djl_type!r}")
        shape = tuple(struct.unpack(">q", read_exact(reader, 8))[0] for _ in range(read_int(reader)))
        read_exact(reader, 2 * read_int(reader))  # layout characters, unused
        order = chr(read_byte(reader))
        payload = read_exact(reader, read_int(reader))
        out.append(np.frombuffer(payload, dtype=np.dtype(dtype).newbyteorder(order)).reshape(shape).copy())
    return out
