"""``decode``/``encode`` by content type, as custom DJL handlers call them (``djl_python.encode_decode``).

Same contract as DJL's module (djl-serving v0.26.0-v0.28.0,
``engines/python/setup/djl_python/encode_decode.py``):

* ``decode(inputs, content_type, key=None)`` -> a dict: JSON as is (no type:
  JSON, an empty body ``{"inputs": ""}``); ``text/plain`` -> ``{"inputs":
  [text]}``; ``text/csv`` -> ``{"inputs": [column inputs...]}`` or one dict per
  row; ``image/*`` -> PIL image; ``audio/*`` and unknown types -> bytes;
  ``tensor/npz``, ``tensor/ndlist``, ``application/x-npy`` -> arrays;
  ``application/x-www-form-urlencoded`` -> the body string.
* ``encode(outputs, prediction, content_type, key=None)`` adds ``prediction``
  as JSON (default), CSV, npz or NDList and sets ``Content-Type``.

DJL's ``decode_csv`` names an undefined variable and its ``encode`` calls an
``Output.add_as_string`` that does not exist; both work here.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Optional

from djl_python.inputs import Input
from djl_python.outputs import Output

CSV_HEADERS = ("question", "context", "inputs")


def decode_csv(inputs: Input, key: Optional[str] = None) -> dict[str, Any]:
    """CSV with a header naming ``inputs`` (or ``question``/``context``). Raises ``ValueError`` otherwise."""
    text = inputs.get_as_string(key) or ""
    first = text.splitlines()[0].lower() if text else ""
    if not any(header in first for header in CSV_HEADERS):
        raise ValueError("You need to provide the correct CSV with Header columns to use it with the inference "
                         "toolkit default handler.")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and "inputs" in rows[0]:
        return {"inputs": [row["inputs"] for row in rows]}
    return {"inputs": rows}


def encode_csv(content: Any) -> str:
    """A list of dicts (or an iterable of them) as CSV with a header row."""
    rows = content if isinstance(content, list) else list(content)
    stream = io.StringIO()
    writer = csv.DictWriter(stream, list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def decode(inputs: Input, content_type: Optional[str], key: Optional[str] = None) -> Any:
    if not content_type:
        if not inputs.get_as_bytes(key):
            return {"inputs": ""}
        return inputs.get_as_json(key)
    if "application/json" in content_type:
        return inputs.get_as_json(key)
    if "text/csv" in content_type:
        return decode_csv(inputs, key)
    if "text/plain" in content_type:
        return {"inputs": [inputs.get_as_string(key)]}
    if content_type.startswith("image/"):
        return {"inputs": inputs.get_as_image(key)}
    if content_type.startswith("audio/"):
        return {"inputs": inputs.get_as_bytes(key)}
    if "tensor/npz" in content_type:
        return {"inputs": inputs.get_as_npz(key)}
    if content_type in ("tensor/ndlist", "application/x-npy"):
        return {"inputs": inputs.get_as_numpy(key)}
    if content_type == "application/x-www-form-urlencoded":
        return {"inputs": inputs.get_as_string(key)}
    return {"inputs": inputs.get_as_bytes(key)}


def encode(outputs: Output, prediction: Any, content_type: Optional[str], key: Optional[str] = None) -> None:
    if not content_type or "application/json" in content_type:
        outputs.add_as_json(prediction, key=key)
        outputs.add_property("Content-Type", "application/json")
    elif "text/csv" in content_type:
        outputs.add(encode_csv(prediction), key=key)
        outputs.add_property("Content-Type", "text/csv")
    elif "tensor/npz" in content_type:
        outputs.add_as_npz(prediction, key=key)
        outputs.add_property("Content-Type", "tensor/npz")
    else:
        outputs.add_as_numpy(prediction, key=key)
        outputs.add_property("Content-Type", "tensor/ndlist")
