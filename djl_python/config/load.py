"""``load_config``: gather the sources, warn about unknown keys, validate once.

Unknown keys are not fatal (DJL passes every ``option.*`` through, and other
engines' keys may be present), but each one is logged with the closest known
key, so a typo such as ``option.tensor_paralel_degree`` does not go unnoticed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from djl_python.config.errors import ConfigError, ConfigProblem, config_error_from_validation
from djl_python.config.handler_config import INPUT_ONLY_KEYS, HandlerConfig
from djl_python.config.honesty import warn_inert_options
from djl_python.config.suggest import suggestion_hint
from djl_python.config.sources import (
    OptionValue,
    Options,
    merge_options,
    options_from_env,
    options_from_properties,
    read_properties_file,
)

logger = logging.getLogger(__name__)

PROPERTIES_FILE = "serving.properties"

# Keys read by DJL's Java front end (workers, batching, devices) or by the
# Python process launcher. They are legitimately present and not ours to use.
IGNORED_KEYS = frozenset(
    {
        "minWorkers",
        "maxWorkers",
        "gpu.minWorkers",
        "gpu.maxWorkers",
        "cpu.minWorkers",
        "cpu.maxWorkers",
        "neuron.minWorkers",
        "neuron.maxWorkers",
        "max_batch_delay",
        "max_idle_time",
        "load_on_devices",
        "parallel_loading",
        "required_memory_mb",
        "reserved_memory_mb",
        "device_id",
        "env",
        "handler",
        "log_model_metric",
        "metrics_aggregation",
        "python_executable",
        "pythonExecutable",
    }
)

KNOWN_KEYS = frozenset(HandlerConfig.model_fields) | frozenset(INPUT_ONLY_KEYS)


def _warn_unknown(options: Options) -> None:
    for key, option in sorted(options.items()):
        if key in KNOWN_KEYS or key in IGNORED_KEYS:
            continue
        logger.warning("ignoring unknown configuration key %s%s", option.origin, suggestion_hint(key, KNOWN_KEYS))


def _file_options(model_dir: str | None) -> Options:
    if model_dir is None:
        return {}
    path = Path(model_dir) / PROPERTIES_FILE
    if not path.is_file():
        return {}
    try:
        return options_from_properties(read_properties_file(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), None, f"cannot be read: {exc}")]) from exc


def validate_options(options: Options) -> HandlerConfig:
    """Validate merged options; a failure is a ``ConfigError`` naming every
    bad key as written."""
    _warn_unknown(options)
    raw = {key: option.value for key, option in options.items() if key in KNOWN_KEYS}
    origins = {key: option.origin for key, option in options.items()}
    try:
        config = HandlerConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error_from_validation(exc, origins, raw) from None
    warn_inert_options(config, options)
    config._origins = dict(origins)
    return config


def load_config(
    model_dir: str | Path | None = None,
    properties: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Options | None = None,
) -> HandlerConfig:
    """Build the handler configuration from its sources.

    ``properties`` (keys with or without ``option.``) replaces reading
    ``model_dir/serving.properties``. ``env`` defaults to ``os.environ``.
    ``overrides`` are command-line values (field -> ``OptionValue`` whose origin
    is the flag, e.g. ``--max-num-seqs``); an ``overrides["model_dir"]`` is the
    folder whose ``serving.properties`` is read. ``model_dir`` defaults to the
    folder named by ``SERVING_LOAD_MODELS``; an explicit ``model_dir`` beats
    every source. Precedence otherwise: overrides > properties > ``OPTION_*`` >
    ``HF_MODEL_ID`` / ``SERVING_LOAD_MODELS``.

    Raises ``ConfigError`` listing every invalid key.
    """
    env_options = options_from_env(os.environ if env is None else env)
    explicit: Options = dict(overrides or {})
    if model_dir is not None:
        explicit["model_dir"] = OptionValue(str(model_dir), "model_dir")
    if properties is not None:
        file_options = options_from_properties(properties)
    else:
        folder = explicit["model_dir"].value if "model_dir" in explicit else None
        if folder is None and "model_dir" in env_options:
            folder = env_options["model_dir"].value
        file_options = _file_options(folder)
    return validate_options(merge_options(explicit, file_options, env_options))
