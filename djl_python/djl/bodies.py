"""Request bodies as DJL's handler reads them, and the seed Java attaches to each request.

Content types follow ``encode_decode.decode`` (djl-serving v0.26.0-v0.28.0,
``engines/python/setup/djl_python/encode_decode.py``):

* no ``Content-Type``: JSON (an empty body is ``{"inputs": ""}``);
* ``application/json``: JSON;
* ``text/plain``: the whole body is the prompt;
* ``application/x-www-form-urlencoded``: the whole body is the prompt,
  undecoded (it is what ``curl -d 'text'`` sends);
* ``text/csv``: a header row; an ``inputs`` column gives the prompts, other
  columns (``question``/``context``) give one dict per row. DJL's own
  ``decode_csv`` names an undefined variable and fails every CSV request; we
  implement what it evidently meant;
* anything else: refused, naming the content type (DJL hands raw bytes to the
  tokenizer, which fails less clearly).

Parameters arrive as strings from some clients (form tools, SageMaker
tooling): the numeric and boolean LMI parameters accept ``"20"``, ``"0.7"``,
``"true"``/``"false"`` (DJL's handler passes such strings on; its scheduler
does ``int(seed)`` and tests ``do_sample`` for truth). A string that is not a
number stays as it is, so validation names the field.

**Seed.** Java adds ``batch_<i>.seed`` = ``String.valueOf(RandomUtils.nextInt())``
to each new rolling request (``RollingBatch.addInput``): a *signed* 32-bit
integer. DJL's handler uses it when the request samples and names no seed
(``utils._parse_inputs_params``, ``slot.py``: ``int(param["seed"])``). Our
engine takes seeds in ``[0, 2**63)``, so a negative Java seed is read as the
same 32 bits unsigned.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any, Optional

from djl_python.engine.knobs import sampling_knobs
from djl_python.engine.request import InvalidRequest

# Every sampling knob by its declared type, plus the other numeric LMI parameters.
INT_PARAMS = frozenset({"max_new_tokens", "seed", "top_n_tokens", "max_tokens", "n", "logprobs", "top_logprobs"}
                       | {k.name for k in sampling_knobs() if k.kind is int})
FLOAT_PARAMS = frozenset({"frequency_penalty", "presence_penalty"}
                         | {k.name for k in sampling_knobs() if k.kind is float})
BOOL_PARAMS = frozenset({"do_sample", "details", "decoder_input_details", "return_full_text", "ignore_eos",
                         "stream"})
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def decode_body(body: Optional[bytes], content_type: Optional[str]) -> dict[str, Any]:
    """The request as a dict, per DJL's content-type rules. Raises ``InvalidRequest("body", ...)``."""
    raw = bytes(body or b"")
    ct = (content_type or "").split(";")[0].strip().lower()
    if not ct or ct == "application/json" or ct.endswith("+json"):
        if not raw.strip():
            if ct:
                raise InvalidRequest("body", "empty request body")
            return {"inputs": ""}
        data = _json(raw)
        if not isinstance(data, dict):
            raise InvalidRequest("body", f"expected a JSON object, got {type(data).__name__}")
        return data
    text = _text(raw)
    if ct in ("text/plain", "application/x-www-form-urlencoded"):
        return {"inputs": text}
    if ct == "text/csv":
        return _csv(text)
    raise InvalidRequest("body", f"unsupported Content-Type {content_type!r}: send application/json, text/plain, "
                         "application/x-www-form-urlencoded or text/csv")


def coerce_parameters(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with string numbers/booleans of known parameters turned into numbers/booleans."""
    out = dict(request)
    params = out.get("parameters")
    if isinstance(params, dict):
        out["parameters"] = {k: _coerce(k, v) for k, v in params.items()}
    for key in BOOL_PARAMS | INT_PARAMS | FLOAT_PARAMS:
        if key in out and key != "parameters":
            out[key] = _coerce(key, out[key])
    return out


def java_seed(text: Optional[str]) -> Optional[int]:
    """Java's ``batch_<i>.seed`` (a signed int) as a seed in ``[0, 2**32)``; ``None`` if absent or malformed."""
    if text is None or not _INT.match(text.strip()):
        return None
    return int(text.strip()) & 0xFFFFFFFF


def _coerce(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key in BOOL_PARAMS and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if key in INT_PARAMS and _INT.match(text):
        return int(text)
    if key in FLOAT_PARAMS and _FLOAT.match(text):
        return float(text)
    return value


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest("body", f"not valid UTF-8: {e}") from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(_text(raw))
    except json.JSONDecodeError as e:
        raise InvalidRequest("body", f"invalid JSON: {e}") from None
    except ValueError as e:  # a number Python will not convert (an integer of over 4,300 digits)
        raise InvalidRequest("body", f"unreadable JSON number: {e}") from None


def _csv(text: str) -> dict[str, Any]:
    rows = list(csv.DictReader(io.StringIO(text)))
    header = [h.lower() for h in (rows[0].keys() if rows else [])]
    if not rows or not any(h in header for h in ("inputs", "question", "context")):
        raise InvalidRequest("body", "text/csv needs a header row with an inputs (or question/context) column "
                             "and at least one data row")
    if "inputs" in rows[0]:
        prompts = [row["inputs"] for row in rows]
        return {"inputs": prompts[0] if len(prompts) == 1 else prompts}
    return {"inputs": rows}
