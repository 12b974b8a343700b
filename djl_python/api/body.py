"""Request bodies: bytes -> a JSON object -> a validated pydantic model.

Written once for every API: a malformed body is ``InvalidRequest("body")``; a
schema error is ``InvalidRequest(<dotted field path as the user wrote it>)``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, TypeVar, Union

from pydantic import BaseModel, ValidationError

from djl_python.engine.request import InvalidRequest

M = TypeVar("M", bound=BaseModel)
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
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise InvalidRequest("body", f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", f"expected a JSON object, got {type(data).__name__}")
    return data


def validate(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """``model.model_validate(data)``; the most specific error becomes ``InvalidRequest``.

    A union reports one error per member; the deepest path is the most specific.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        paths = [[str(p) for p in e["loc"] if not _union_tag(p)] for e in errors]
        best = max(range(len(paths)), key=lambda i: len(paths[i]))
        first = errors[best]
        message = "unknown or unsupported field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidRequest(prefix + ".".join(paths[best]) if paths[best] else "body", message) from None


def _union_tag(part: Any) -> bool:
    # pydantic adds a union member's type ("str", "list[int]", "function-after[...]", a model
    # name in a tagged position) to the path; the user never wrote those.
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part
                                      or part[:1].isupper())
