"""``Input``: one message from DJL Serving's Java front end to this Python worker.

Wire layout (big-endian, see ``djl_python.framing``)::

    int16 n_props, n x (key str, value str),
    int16 n_content, n x (key str, int32 len, bytes)

A rolling/dynamic batch arrives as ONE ``Input`` whose properties carry
``batch_size=N`` and ``batch_<iii>.<key>`` entries and whose content carries
``batch_<iii>.data`` (and ``batch_<iii>.seed``); ``get_batches`` splits it back
into one ``Input`` per request, in index order.

The API is the one custom handlers written for DJL call (djl-serving
v0.26.0-v0.28.0, ``engines/python/setup/djl_python/inputs.py``): ``Input()``
then ``read(conn)`` filling it in place (what DJL's ``djl_python_engine.py``
does), ``function_name``, ``get_data``, ``get_as_bytes/string/json/numpy/npz/
csv/image``, ``get_batches``, ``is_batch``, ``get_properties``, ``get_property``.
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

from djl_python.framing import (
    Readable,
    check_count,
    read_blob,
    read_short,
    read_str,
    write_blob,
    write_short,
    write_str,
)
from djl_python.pair_list import PairList

BATCH_PREFIX = "batch_"


def _split_batch_key(key: str) -> Optional[tuple[int, str]]:
    # Java writes "batch_" + 3-digit index + "." (DJL reads key[6:9] / key[10:]); the
    # index is parsed up to the dot so an index above 999 still splits correctly.
    if not key.startswith(BATCH_PREFIX) or key == "batch_size":
        return None
    dot = key.find(".", len(BATCH_PREFIX))
    if dot < 0 or not key[len(BATCH_PREFIX) : dot].isdigit():
        return None
    return int(key[len(BATCH_PREFIX) : dot]), key[dot + 1 :]


class Input:
    """Properties (a string map, Java's order kept) and content (a ``PairList`` of bytes)."""

    def __init__(self, properties: Optional[dict[str, str]] = None,
                 content: Optional[PairList[bytes]] = None) -> None:
        self.properties: dict[str, str] = dict(properties or {})
        self.content: PairList[bytes] = content if content is not None else PairList()
        self.function_name: Optional[str] = self.properties.get("handler")

    # -- wire ---------------------------------------------------------------------------

    def read(self, conn: Readable) -> "Input":
        """Read one message into this ``Input`` (in place, as DJL's engine script expects); returns it.

        Raises ``framing.ConnectionClosed`` at end of stream.
        """
        for _ in range(read_short(conn)):
            key = read_str(conn)
            self.properties[key] = read_str(conn)  # type: ignore[index]
        n_content = read_short(conn)
        for _ in range(max(n_content, 0)):
            key = read_str(conn)
            self.content.keys.append(key)  # an empty blob is still a pair (PairList.add drops None only)
            self.content.values.append(read_blob(conn))
        self.function_name = self.properties.get("handler")
        return self

    def encode(self) -> bytes:
        """The bytes Java's ``RequestEncoder`` would send for this input (client side)."""
        buf = bytearray()
        check_count("properties", len(self.properties))
        write_short(buf, len(self.properties))
        for k, v in self.properties.items():
            write_str(buf, k)
            write_str(buf, v)
        check_count("content items", self.content.size())
        write_short(buf, self.content.size())
        for k, v in self.content:
            write_str(buf, k)
            write_blob(buf, bytes(v))
        return bytes(buf)

    # -- properties -----------------------------------------------------------------------

    def get_properties(self) -> dict[str, str]:
        return self.properties

    def get_property(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """Case-insensitive lookup (HTTP header names arrive as properties)."""
        lowered = key.lower()
        for k, v in self.properties.items():
            if k is not None and k.lower() == lowered:
                return v
        return default

    def get_function_name(self) -> Optional[str]:
        return self.function_name if self.function_name is not None else self.properties.get("handler")

    def get_content_type(self) -> Optional[str]:
        return self.get_property("Content-Type")

    def is_json(self) -> bool:
        ct = self.get_content_type()
        return ct is None or ct.lower().startswith("application/json")

    def is_text(self) -> bool:
        ct = self.get_content_type()
        return ct is not None and ct.lower().startswith("text/")

    # -- content --------------------------------------------------------------------------

    def get_content(self) -> PairList[bytes]:
        return self.content

    def is_empty(self) -> bool:
        return self.content.is_empty()

    def contains_key(self, key: str) -> bool:
        return self.content.get(key) is not None

    def get_as_bytes(self, key: Optional[str] = None) -> Optional[bytes]:
        """Content under ``key``; without a key: ``data``, else the first item; ``None`` if empty.

        Raises ``KeyError`` when a named key is absent.
        """
        if self.content.is_empty():
            return None
        if key is not None:
            value = self.content.get(key)
            if value is None:
                raise KeyError(f"no content named {key!r}")
            return bytes(value)
        value = self.content.get("data")
        return bytes(value if value is not None else self.content.value_at(0))

    def get_as_string(self, key: Optional[str] = None) -> Optional[str]:
        data = self.get_as_bytes(key)
        return None if data is None else data.decode("utf-8")

    def get_as_json(self, key: Optional[str] = None) -> Any:
        data = self.get_as_bytes(key)
        return None if data is None else json.loads(data.decode("utf-8"))

    def get_data(self, key: Optional[str] = None) -> Any:
        """Content decoded by its ``Content-Type``, as DJL's ``Input.get_data`` does.

        ``tensor/ndlist`` -> arrays, ``tensor/npz`` -> arrays, ``application/json*``
        -> JSON, ``text/*`` -> str, ``image/*`` -> PIL image, else bytes (``None`` if empty).
        """
        content_type = self.get_property("content-type")
        if content_type == "tensor/ndlist":
            return self.get_as_numpy(key)
        if content_type == "tensor/npz":
            return self.get_as_npz(key)
        if content_type is not None and content_type.startswith("application/json"):
            return self.get_as_json(key)
        if content_type is not None and content_type.startswith("text/"):
            return self.get_as_string(key)
        if content_type is not None and content_type.startswith("image/"):
            return self.get_as_image(key)
        return self.get_as_bytes(key)

    def get_as_npz(self, key: Optional[str] = None) -> list[Any]:
        """An ``.npz`` archive's arrays in file order; ``[]`` when empty."""
        import numpy as np

        data = self.get_as_bytes(key)
        if data is None:
            return []
        with np.load(io.BytesIO(data)) as npz:
            return [npz[name] for name in npz.files]

    def get_as_csv(self, key: Optional[str] = None) -> list[dict[str, str]]:
        """CSV with a header row, one dict per row (``csv.DictReader``); ``[]`` when empty."""
        import csv

        text = self.get_as_string(key)
        return [] if text is None else list(csv.DictReader(io.StringIO(text)))

    def get_as_image(self, key: Optional[str] = None) -> Any:
        """The content opened with Pillow (which must be installed)."""
        from PIL import Image

        data = self.get_as_bytes(key)
        return None if data is None else Image.open(io.BytesIO(data))

    def get_as_numpy(self, key: Optional[str] = None) -> list[Any]:
        """Content as a list of numpy arrays (DJL NDList or ``.npz``); ``[]`` when empty."""
        from djl_python.np_util import from_nd_list

        data = self.get_as_bytes(key)
        return [] if data is None else from_nd_list(data)

    # -- batches --------------------------------------------------------------------------

    def is_batch(self) -> bool:
        return "batch_size" in self.properties

    def get_batch_size(self) -> int:
        return int(self.properties.get("batch_size", "1"))

    def get_batches(self) -> list["Input"]:
        """One ``Input`` per request of a batch (``[self]`` when not a batch).

        ``batch_<iii>.<key>`` properties and content go to request ``iii`` under
        ``<key>``; other properties (``batch_size``, ``reset_rollingbatch``, ...)
        stay on the envelope. Raises ``ValueError`` for an index outside the batch.
        """
        if not self.is_batch():
            return [self]
        size = self.get_batch_size()
        batch = [Input() for _ in range(size)]

        def slot(key: str) -> Optional[tuple[Input, str]]:
            split = _split_batch_key(key)
            if split is None:
                return None
            index, sub = split
            if index >= size:
                raise ValueError(f"{key!r} is outside batch_size={size}")
            return batch[index], sub

        for key, value in self.properties.items():
            target = slot(key)
            if target is not None:
                target[0].properties[target[1]] = value
        for key, data in self.content:
            target = slot(key) if key is not None else None
            if target is not None:
                target[0].content.add(target[1], data)
        return batch

    def __repr__(self) -> str:
        return f"Input(properties={self.properties!r}, content_keys={self.content.get_keys()!r})"
