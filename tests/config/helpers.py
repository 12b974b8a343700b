"""Helpers for configuration tests: every test passes its environment explicitly."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from djl_python.config import ConfigError, HandlerConfig, load_config


def parse(properties: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None) -> HandlerConfig:
    """Validate ``properties`` (as a serving.properties mapping) with ``env`` (default: empty)."""
    return load_config(properties=dict(properties or {}), env=dict(env or {}))


def parse_error(properties: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(properties, env)
    return info.value
