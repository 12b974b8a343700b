"""Structured-output fields of every API -> one engine ``Constraint``.

The shapes are the ones clients already send:

* OpenAI ``response_format`` (chat and completions): ``{"type": "text"}``,
  ``{"type": "json_object"}`` (any JSON object) and ``{"type": "json_schema", "json_schema":
  {"name", "description"?, "schema", "strict"?}}``. ``strict`` is accepted and always holds: the
  grammar enforces the schema. TGI's chat route sends ``{"type": "json" | "json_object" | "regex" |
  "json_schema", "value": ...}`` here, and that is accepted too.
* vLLM's ``structured_outputs`` (``StructuredOutputsParams``, vllm/sampling_params.py): exactly
  one of ``json`` (a schema object or its JSON text), ``regex``, ``choice``, ``grammar`` (Lark or
  GBNF) and ``json_object``; ``disable_any_whitespace`` (compact JSON),
  ``disable_additional_properties`` (objects with ``properties`` get ``additionalProperties:
  false`` unless they say otherwise) and ``whitespace_pattern`` act per request.
  ``structural_tag`` is refused.
* TGI's ``parameters.grammar``: ``{"type": "json" | "json_object", "value": schema}``,
  ``{"type": "json_schema", "value": {"name"?, "schema"}}`` and ``{"type": "regex", "value": str}``.

Every error is ``InvalidRequest(<field path as the user wrote it>)``; a schema that parses here
but cannot compile is refused by the engine's compiler with the same field path.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from djl_python.api.body import FailFastList
from djl_python.engine.constraint import DEFAULT_JSON_WHITESPACE, Constraint
from djl_python.engine.request import InvalidRequest

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class JsonSchemaFormat(_Body):
    name: str
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Body):
    """OpenAI's ``response_format`` (plus TGI's ``json`` / ``regex`` with ``value`` on its chat route)."""

    type: Literal["text", "json_object", "json_schema", "json", "regex"]
    json_schema: Optional[JsonSchemaFormat] = None
    value: Optional[Union[dict[str, Any], str]] = None

    def constraint(self, field: str = "response_format") -> Optional[Constraint]:
        if self.type == "text":
            return None
        if self.type == "json_schema":
            if self.json_schema is None and isinstance(self.value, dict):  # TGI's chat route: {"value": {"schema"}}
                return _tgi_value("json_schema", self.value, f"{field}.value")
            if self.json_schema is None:
                raise InvalidRequest(f"{field}.json_schema", "required when type is 'json_schema'")
            if self.json_schema.schema_ is None:  # as vLLM: a json_schema format without a schema constrains nothing
                raise InvalidRequest(f"{field}.json_schema.schema", "required: the JSON schema the output must match")
            return Constraint.json_schema(self.json_schema.schema_, f"{field}.json_schema.schema")
        if self.type == "json_object" and self.value is None:
            return Constraint.json_schema(ANY_JSON_OBJECT, field)
        return _tgi_value(self.type, self.value, f"{field}.value")


class StructuredOutputs(_Body):
    """vLLM's ``structured_outputs`` (see the module docstring)."""

    json_: Optional[Union[dict[str, Any], str]] = Field(default=None, alias="json")
    regex: Optional[str] = None
    choice: Optional[FailFastList[str]] = None
    grammar: Optional[str] = None
    json_object: Optional[bool] = None
    structural_tag: Optional[str] = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: Optional[str] = None

    def constraint(self, field: str = "structured_outputs") -> Constraint:
        given = [name for name in ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
                 if getattr(self, "json_" if name == "json" else name) is not None]
        if len(given) != 1:
            raise InvalidRequest(field, "exactly one of json, regex, choice, grammar and json_object must be set, "
                                 f"got {given or 'none'}")
        kind = given[0]
        if kind == "structural_tag":
            raise InvalidRequest(f"{field}.structural_tag", "structural tags are not supported")
        whitespace = "" if self.disable_any_whitespace else (self.whitespace_pattern or DEFAULT_JSON_WHITESPACE)
        if kind in ("json", "json_object"):
            if kind == "json_object" and not self.json_object:
                raise InvalidRequest(f"{field}.json_object", "must be true when set")
            schema = _schema(self.json_, f"{field}.json") if kind == "json" else dict(ANY_JSON_OBJECT)
            if self.disable_additional_properties:
                schema = closed_objects(schema)
            return Constraint.json_schema(schema, f"{field}.{kind}", whitespace)
        if kind == "choice":
            return Constraint.choice(self.choice or [], f"{field}.choice")
        return Constraint(kind, getattr(self, kind), f"{field}.{kind}")  # type: ignore[arg-type]


class TgiGrammar(_Body):
    """TGI's ``parameters.grammar``."""

    type: Literal["json", "json_object", "json_schema", "regex"]
    value: Union[dict[str, Any], str]

    def constraint(self, field: str = "parameters.grammar") -> Constraint:
        return _tgi_value(self.type, self.value, f"{field}.value")


def _tgi_value(kind: str, value: Any, field: str) -> Constraint:
    if kind == "regex":
        if not isinstance(value, str):
            raise InvalidRequest(field, "a regex grammar's value must be a string")
        return Constraint("regex", value, field)
    if kind == "json_schema":
        if not isinstance(value, dict) or not isinstance(value.get("schema"), dict):
            raise InvalidRequest(field, "a json_schema grammar's value must be {\"name\"?, \"schema\": {...}}")
        return Constraint.json_schema(value["schema"], f"{field}.schema")
    return Constraint.json_schema(_schema(value, field), field)


def _schema(value: Any, field: str) -> Any:
    """A schema object from an object or its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InvalidRequest(field, f"not a JSON schema: {err}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(field, f"a JSON schema must be an object, got {type(value).__name__}")
    return value


def closed_objects(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object schema that lists
    ``properties`` and does not set ``additionalProperties`` (vLLM's ``disable_additional_properties``)."""
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: closed_objects(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def one_constraint(*candidates: tuple[str, Optional[Constraint]]) -> Optional[Constraint]:
    """The one constraint among ``(field, constraint)`` pairs; two set is ``InvalidRequest`` naming the second."""
    chosen = [(name, c) for name, c in candidates if c is not None]
    if len(chosen) > 1:
        raise InvalidRequest(chosen[1][0], f"cannot be combined with {chosen[0][0]}: one output constraint per request")
    return chosen[0][1] if chosen else None
