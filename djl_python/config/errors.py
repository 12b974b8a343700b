"""Configuration errors that name every bad key the way the user wrote it.

Validation runs on canonical field names (``max_rolling_batch_size``) but users
write ``option.max_rolling_batch_size`` in ``serving.properties`` or
``OPTION_MAX_ROLLING_BATCH_SIZE`` in the environment. ``ConfigError`` maps each
pydantic error location back to that written key through an ``origins``
mapping (canonical name -> written key) and reports all problems at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class ConfigProblem:
    """One rejected key: ``key`` as written, the raw ``value`` (None when the
    problem is a missing or conflicting combination) and what is allowed."""

    key: str
    value: Any
    message: str
    # Cross-field rules write their own sentence that already names the keys.
    message_names_key: bool = False

    def __str__(self) -> str:
        if self.message_names_key:
            return self.message
        if self.value is None:
            return f"{self.key}: {self.message}"
        return f"{self.key}={self.value!r}: {self.message}"


class ConfigError(ValueError):
    """The configuration is unusable; ``problems`` lists every bad key.

    The message has one line per problem so a single start-up attempt shows
    the user everything to fix.
    """

    def __init__(self, problems: Sequence[ConfigProblem]):
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        count = len(self.problems)
        header = f"invalid configuration ({count} problem{'s' if count > 1 else ''}):"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))

    @property
    def keys(self) -> tuple[str, ...]:
        """The written keys of all problems, in report order."""
        return tuple(p.key for p in self.problems)


class FieldConflict(ValueError):
    """Raised by model validators for a rule that spans several fields.

    ``template`` refers to the fields as ``{field_name}`` placeholders, so the
    same rule renders as ``batch_size`` in code and as
    ``option.batch_size`` / ``OPTION_BATCH_SIZE`` in the user's error.
    """

    def __init__(self, fields: Sequence[str], template: str, **values: Any):
        self.fields = tuple(fields)
        self.template = template
        self.values = values
        super().__init__(self.render(None))

    def render(self, origins: Mapping[str, str] | None) -> str:
        """The rule in the user's words: each field as written, ``option.<field>`` for one left unset;
        without ``origins``, in the code's words (bare field names)."""
        if origins is None:
            return self.template.format(**{f: f for f in self.fields}, **self.values)
        names = {f: origins.get(f, f"option.{f}") for f in self.fields}
        return self.template.format(**names, **self.values)


def _written_key(loc: tuple[Any, ...], origins: Mapping[str, str]) -> str:
    field = str(loc[0]) if loc else ""
    written = origins.get(field, field)
    # Nested locations (list items) keep their index: option.context_length_estimate[1]
    return written + "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))


def config_error_from_validation(
    error: ValidationError,
    origins: Mapping[str, str],
    raw: Mapping[str, Any],
) -> ConfigError:
    """Translate a pydantic ``ValidationError`` into a ``ConfigError``.

    ``origins`` maps canonical field names to the key as written; ``raw`` maps
    canonical names to the raw (string) values the user supplied.
    """
    problems: list[ConfigProblem] = []
    for item in error.errors(include_url=False):
        ctx = item.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, FieldConflict):
            keys = ", ".join(origins.get(f, f) for f in cause.fields)
            problems.append(ConfigProblem(keys, None, cause.render(origins), message_names_key=True))
            continue
        loc = tuple(item.get("loc", ()))
        field = str(loc[0]) if loc else ""
        message = str(cause) if isinstance(cause, ValueError) else item["msg"]
        value = raw.get(field, item.get("input")) if loc else None
        key = _written_key(loc, origins) if loc else "configuration"
        problems.append(ConfigProblem(key, value, message))
    return ConfigError(problems)
