"""``Constraint``: what a request's output must match, as plain data.

Part of ``SamplingParams`` (``constraint``): hashable, so compiled grammars are cached by it
(``engine/grammar.py``), and free of any API's vocabulary: each API builds it from its own
fields (``response_format``, ``structured_outputs``, TGI's ``grammar``...) and passes the
user's field path as ``field``, which every error about the constraint names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from djl_python.engine.errors import InvalidRequest

ConstraintKind = Literal["json_schema", "regex", "choice", "grammar"]
KINDS: tuple[str, ...] = ("json_schema", "regex", "choice", "grammar")
MAX_CONSTRAINT_CHARS = 1 << 18  # a schema or grammar bigger than any real one (256 KiB of text)
# Whitespace a JSON value may hold between tokens, by default: pretty-printing stays possible (a newline
# and 2-space indentation nine levels deep), and a model that keeps emitting spaces (a known failure of
# unbounded whitespace) cannot run to max_tokens on it.
DEFAULT_JSON_WHITESPACE = r"[\x20\x0A\x0D\x09]{0,20}"


@dataclass(frozen=True)
class Constraint:
    """What a request's output must match.

    ``value``: for ``json_schema`` the schema as JSON text; ``regex`` a Rust-regex pattern;
    ``choice`` a JSON list of strings; ``grammar`` a Lark or GBNF grammar. ``field`` names the
    user's field in errors and is not part of equality (two APIs asking the same constraint share
    a compiled grammar). ``whitespace`` (JSON only): a regex for the whitespace allowed between
    JSON tokens; ``""`` allows none.
    """

    kind: ConstraintKind
    value: str
    field: str = field(default="constraint", compare=False)
    whitespace: str = DEFAULT_JSON_WHITESPACE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRequest(self.field, f"unknown constraint kind {self.kind!r}")
        if not isinstance(self.value, str) or not self.value:
            raise InvalidRequest(self.field, "must not be empty")
        if len(self.value) > MAX_CONSTRAINT_CHARS:
            raise InvalidRequest(self.field, f"{len(self.value)} characters; at most {MAX_CONSTRAINT_CHARS}")

    @classmethod
    def json_schema(cls, schema: Any, field: str, whitespace: str = DEFAULT_JSON_WHITESPACE) -> "Constraint":
        """From a schema object (a dict, or ``True`` for any JSON value); key order is kept."""
        if schema is True:
            schema = {}
        if not isinstance(schema, dict):
            raise InvalidRequest(field, f"a JSON schema must be an object, got {type(schema).__name__}")
        return cls("json_schema", json.dumps(schema, ensure_ascii=False, separators=(",", ":")), field, whitespace)

    @classmethod
    def choice(cls, options: Sequence[str], field: str) -> "Constraint":
        if not options or not all(isinstance(o, str) and o for o in options):
            raise InvalidRequest(field, "must be a non-empty list of non-empty strings")
        return cls("choice", json.dumps(list(options), ensure_ascii=False), field)
