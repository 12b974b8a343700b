"""Where configuration values come from, and under which name the user wrote them.

Three sources, in DJL's order of precedence (highest first):

1. ``serving.properties`` in the model folder (``option.<key>=value`` and
   top-level keys such as ``engine``; ``option.<key>`` beats a top-level
   ``<key>`` of the same name);
2. ``OPTION_<KEY>`` environment variables, which only fill keys the file does
   not set (``OPTION_MAX_ROLLING_BATCH_SIZE`` -> ``max_rolling_batch_size``,
   ``OPTION_ENTRYPOINT`` -> ``entryPoint``, ``OPTION_ENGINE`` -> ``engine``);
3. ``HF_MODEL_ID`` (fills ``model_id``) and ``SERVING_LOAD_MODELS``
   (``name::Engine=url``: fills ``served_model_name``, ``engine`` and ``model_dir``).

Every value keeps its ``origin``, the key exactly as written
(``option.dtype``, ``OPTION_DTYPE``, ``HF_MODEL_ID``), so errors can name it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from djl_python.config.errors import ConfigError, ConfigProblem

OPTION_PREFIX = "option."
ENV_PREFIX = "OPTION_"
# Keys whose written spelling differs from the field name.
KEY_ALIASES: dict[str, str] = {"entryPoint": "entry_point", "entrypoint": "entry_point"}
# DJL maps these env suffixes to fixed keys rather than lower-casing them.
_ENV_SPECIAL: dict[str, str] = {"ENTRYPOINT": "entryPoint", "ENGINE": "engine"}
_ENV_UPPER = re.compile(r"[A-Z_0-9]+")
_ENGINE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class OptionValue:
    """A raw string value and the key it was written under."""

    value: str
    origin: str


Options = dict[str, OptionValue]  # field name -> value


def canonical_key(key: str) -> str:
    """Field name for a written key: strip ``option.``, resolve aliases."""
    if key.startswith(OPTION_PREFIX):
        key = key[len(OPTION_PREFIX) :]
    return KEY_ALIASES.get(key, key)


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java-properties style text into ``{key: value}``.

    Supports ``key=value`` and ``key: value``, ``#`` and ``!`` comment lines,
    blank lines and surrounding whitespace. Later duplicates win, as in Java.
    Line continuations and unicode escapes are not supported (LMI files do not
    use them); a line without a separator is a key with an empty value.
    """
    result: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line[0] in "#!":
            continue
        match = re.search(r"[=:]", line)
        if match is None:
            key, value = line, ""
        else:
            key, value = line[: match.start()], line[match.end() :]
        result[key.strip()] = value.strip()
    return result


def read_properties_file(path: str | Path) -> dict[str, str]:
    """Read and parse a ``serving.properties`` file (UTF-8)."""
    return parse_properties(Path(path).read_text(encoding="utf-8"))


def options_from_properties(properties: Mapping[str, str]) -> Options:
    """Options from a properties mapping; keys with ``option.`` win over the
    same key written without it. Empty values count as unset."""
    options: Options = {}
    # Top-level keys first so that option.<key> overwrites them.
    for key in sorted(properties, key=lambda k: k.startswith(OPTION_PREFIX)):
        value = str(properties[key]).strip()
        if value:
            options[canonical_key(key)] = OptionValue(value, key)
    return options


def env_option_key(name: str) -> str | None:
    """The written key for an ``OPTION_*`` variable name, else None."""
    if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
        return None
    suffix = name[len(ENV_PREFIX) :]
    if suffix in _ENV_SPECIAL:
        return _ENV_SPECIAL[suffix]
    return suffix.lower() if _ENV_UPPER.fullmatch(suffix) else suffix


@dataclass(frozen=True)
class ServingLoadModel:
    """One entry of ``SERVING_LOAD_MODELS``: ``[name[:version]::][Engine=]url``."""

    name: str | None
    engine: str | None
    url: str

    @property
    def local_path(self) -> str | None:
        """The folder for ``file://`` URLs and plain paths; None for remote URLs."""
        if self.url.startswith("file://"):
            return self.url[len("file://") :]
        return None if "://" in self.url else self.url


def parse_serving_load_models(value: str) -> ServingLoadModel:
    """Parse ``SERVING_LOAD_MODELS`` (e.g. ``test::Python=/opt/ml/model``).

    This handler serves one model, so a list of several is a ``ConfigError``.
    """
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if len(entries) != 1:
        raise ConfigError(
            [ConfigProblem("SERVING_LOAD_MODELS", value, "must name exactly one model: [name::][Engine=]url")]
        )
    entry = entries[0]
    name, _, rest = entry.rpartition("::")
    engine: str | None = None
    left, sep, right = rest.partition("=")
    if sep and _ENGINE_NAME.fullmatch(left):
        engine, rest = left, right
    if not rest:
        raise ConfigError([ConfigProblem("SERVING_LOAD_MODELS", value, "has no model URL: [name::][Engine=]url")])
    return ServingLoadModel(name or None, engine, rest)


def options_from_env(env: Mapping[str, str]) -> Options:
    """Options from ``OPTION_*``, ``HF_MODEL_ID`` and ``SERVING_LOAD_MODELS``.

    ``OPTION_*`` beats ``HF_MODEL_ID`` and ``SERVING_LOAD_MODELS``; empty
    values are ignored.
    """
    options: Options = {}
    for name in sorted(env):
        written = env_option_key(name)
        value = env[name].strip()
        if written is not None and value:
            options[canonical_key(written)] = OptionValue(value, name)
    hf_model_id = env.get("HF_MODEL_ID", "").strip()
    if hf_model_id:
        options.setdefault("model_id", OptionValue(hf_model_id, "HF_MODEL_ID"))
    load_models = env.get("SERVING_LOAD_MODELS", "").strip()
    if load_models:
        model = parse_serving_load_models(load_models)
        if model.engine:
            options.setdefault("engine", OptionValue(model.engine, "SERVING_LOAD_MODELS"))
        key = "model_dir" if model.local_path is not None else "model_id"
        options.setdefault(key, OptionValue(model.local_path or model.url, "SERVING_LOAD_MODELS"))
        if model.name:  # `name[:version]`: DJL serves it as /predictions/<name>
            options.setdefault("served_model_name", OptionValue(model.name.split(":")[0], "SERVING_LOAD_MODELS"))
    return options


def merge_options(*layers: Options) -> Options:
    """Merge option layers; an earlier layer wins over a later one."""
    merged: Options = {}
    for layer in reversed(layers):
        merged.update(layer)
    return merged
