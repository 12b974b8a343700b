"""``InvalidRequest``: the one error a request's own content raises, in every layer.

Its own module so that both the request types (``engine/request.py``) and the constraint
spec (``engine/constraint.py``) raise it without importing each other.
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A request parameter is invalid. ``field`` names it: the engine says ``prompt``
    or a ``SamplingParams`` field; the API layer renames it to the user's field path.

    ``djl_python.api.errors.to_api_error`` turns it into a 400; it never reaches
    the engine loop.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
