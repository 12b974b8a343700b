"""JSON schemas the structured-output tests run on every path: nested objects, bounded arrays,
enums, required and optional fields, ``anyOf``, string formats and patterns, bounded numbers.

Every schema here has a bounded longest output (strings, arrays and integers are bounded), so a
random tiny model, which picks any allowed token, always finishes: at most 20 whitespace characters
per gap (the default whitespace rule) and a few dozen tokens of values stay far below
``MAX_NEW_TOKENS``. ``FLOAT_SCHEMA`` (unbounded fraction digits) runs only on SmolLM2, which stops."""

from __future__ import annotations

SCHEMAS: dict[str, dict] = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "address": {"type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 8},
                                       "zip": {"type": "integer", "minimum": 1000, "maximum": 9999}},
                        "required": ["city", "zip"], "additionalProperties": False},
        },
        "required": ["name", "address"],
        "additionalProperties": False,
    },
    "bounded_array": {"type": "array", "items": {"type": "integer", "minimum": -9, "maximum": 9},
                      "minItems": 2, "maxItems": 4},
    "enum_and_optional": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "shade": {"type": "integer", "minimum": 0,
                                                                              "maximum": 3}},
        "required": ["color"],
        "additionalProperties": False,
    },
    "any_of": {"type": "object",
               "properties": {"value": {"anyOf": [{"type": "boolean"}, {"type": "null"},
                                                  {"type": "string", "maxLength": 4}]}},
               "required": ["value"], "additionalProperties": False},
    "formats_and_patterns": {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"},
                       "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["day", "code"],
        "additionalProperties": False,
    },
    "bounded_numbers": {
        "type": "object",
        "properties": {"offset": {"type": "integer", "minimum": -100, "maximum": 100},
                       "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 50}},
        "required": ["offset", "count"],
        "additionalProperties": False,
    },
}
FLOAT_SCHEMA = {"type": "object", "properties": {"ratio": {"type": "number", "minimum": 0, "maximum": 1}},
                "required": ["ratio"], "additionalProperties": False}
MAX_NEW_TOKENS = 400  # on a model of 512 positions (``tiny_llama_512``)
REGEX = r"[0-9]{3}-[a-z]{2,4}"
CHOICES = ["yes", "no", "maybe"]
