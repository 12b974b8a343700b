"""Request bodies: bytes -> a JSON object -> a validated pydantic model.

Written once for every API: a malformed body is ``InvalidRequest("body")``; a
schema error is ``InvalidRequest(<dotted field path as the user wrote it>)``;
nesting deeper than ``MAX_DEPTH`` and lone surrogates in what the schema
accepted are refused (``check_values``).

Cost invariant: no body costs more than a real request can need. A body holding
more than ``MAX_JSON_VALUES`` values is refused before it is decoded (a scan of
its text, ``count_values``); the schema check stops at the first unknown field
(``extra="forbid"``) and at the first bad item of a list (``FailFastList``);
the Python-level walk of ``check_values`` runs only over the declared fields of
a body the schema accepted, so values a schema ignores or refuses are never
walked.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Mapping, Optional, TypeVar, Union

from pydantic import BaseModel, Field, ValidationError

from djl_python.engine.request import InvalidRequest

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
# Every list in a request body: its first bad item refuses it (pydantic otherwise reports an error
# for every item, seconds for a list of a million wrong values).
FailFastList = Annotated[list[T], Field(fail_fast=True)]
# More values than any request needs: prompts of 256K token ids in all, a stop list, chat history
# (``count_values`` says what is counted).
MAX_JSON_VALUES = 1 << 18
_ESCAPE = re.compile(r"\\.", re.DOTALL)
# No API body nests more than a few levels (chat content parts: messages.0.content.0.text);
# 32 leaves room for free-form objects (metadata, tool schemas) and stays far below recursion limits.
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
Body = Union[bytes, bytearray, str, Mapping[str, Any]]


def json_object(body: Body, content_type: Optional[str] = "application/json") -> dict[str, Any]:
    """The body as a JSON object. A ``text/plain`` body is LMI's ``{"inputs": <body>}``."""
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidRequest("body", f"not valid UTF-8: {err}") from None
    if content_type and content_type.lower().startswith("text/plain"):
        return {"inputs": body}
    if not body.strip():
        raise InvalidRequest("body", "empty request body; expected a JSON object")
    if count_values(body) > MAX_JSON_VALUES:
        raise InvalidRequest("body", f"the body holds more than {MAX_JSON_VALUES} JSON values; no request needs "
                             "that many")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise InvalidRequest("body", f"malformed JSON: {err}") from None
    except ValueError as err:  # a number Python will not convert (an integer of over 4,300 digits)
        raise InvalidRequest("body", f"unreadable JSON number: {err}") from None
    except RecursionError:  # the decoder recurses per level; deeper than Python's stack allows
        raise InvalidRequest("body", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", f"expected a JSON object, got {type(data).__name__}")
    return data


def count_values(text: str) -> int:
    """About how many values JSON ``text`` holds (array and object elements plus the arrays and
    objects themselves: its ``,``, ``[`` and ``{`` outside strings), counted from its characters
    without decoding it: at C speed, a few milliseconds per MB. The exact count needs a scan for
    strings; it runs only when the quick bounds cannot decide. Invalid JSON gets a rough count
    and is refused by the decoder anyway."""
    structural = text.count(",") + text.count("[") + text.count("{")
    if structural <= MAX_JSON_VALUES:
        return structural  # an upper bound under the limit
    strings = (text.count('"') - text.count('\\"')) // 2  # each string has two unescaped quotes
    if strings // 2 > MAX_JSON_VALUES:
        return strings // 2  # a lower bound over it: a key or an element per two strings at least
    return structure_outside_strings(text)


def structure_outside_strings(text: str) -> int:
    """The exact count of ``,``, ``[`` and ``{`` outside JSON strings, in linear time: escapes
    removed, then every other piece between quotes is outside a string."""
    outside = "".join(_ESCAPE.sub("", text).split('"')[0::2])
    return outside.count(",") + outside.count("[") + outside.count("{")


def check_values(data: Any) -> None:
    """Refuse what no API field can hold but would break later layers: nesting deeper than
    ``MAX_DEPTH`` (chat templates recurse per level) and strings with a lone UTF-16 surrogate
    (``"\\ud800"`` is valid JSON but not encodable as UTF-8, so echoing it would break a response
    mid-way). ``data`` is plain JSON data or a validated model, whose declared fields are walked
    and whose extra fields only by name. Iterative, so any depth is checked in bounded stack space.
    Raises ``InvalidRequest`` naming the field (a dotted path, list indices as numbers)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise InvalidRequest(path[0], f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise InvalidRequest(".".join(path) or "body",
                                     "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode text")
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise InvalidRequest(".".join(path) or "body", "a key contains a lone UTF-16 surrogate")
                stack.append((item, path + (key,)))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, path + (str(i),)) for i, item in enumerate(value))
        elif isinstance(value, BaseModel):
            for key in value.model_extra or ():
                if _SURROGATE.search(key):
                    raise InvalidRequest(".".join(path) or "body", "a key contains a lone UTF-16 surrogate")
            for name, info in type(value).model_fields.items():
                stack.append((getattr(value, name), path + (info.alias or name,)))


def validate(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """``model.model_validate(data)``; the most specific error becomes ``InvalidRequest``.

    A union reports one error per member; the deepest path is the most specific. What the schema
    accepted is then checked by ``check_values``.
    """
    try:
        validated = model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        paths = [[str(p) for p in e["loc"] if not _union_tag(p)] for e in errors]
        best = max(range(len(paths)), key=lambda i: len(paths[i]))
        first = errors[best]
        message = "unknown or unsupported field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidRequest(prefix + ".".join(paths[best]) if paths[best] else "body", message) from None
    try:
        check_values(validated)
    except InvalidRequest as err:
        raise InvalidRequest(prefix + err.field if prefix and err.field != "body" else err.field, err.message) from None
    return validated


def _union_tag(part: Any) -> bool:
    # pydantic adds a union member's type ("str", "list[int]", "function-after[...]", a model
    # name in a tagged position) to the path; the user never wrote those.
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part
                                      or part[:1].isupper())
