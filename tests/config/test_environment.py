"""The explicit environment step: Neuron compiler flags and the neff cache URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from djl_python.config import apply_environment, environment_changes
from tests.config.helpers import parse

IMAGE_FLAGS = "--logfile /tmp/compile.log --temp-dir=/tmp"


def test_parsing_does_not_touch_the_environment() -> None:
    before = dict(os.environ)
    parse({"option.neuron_optimize_level": "2", "option.compiled_graph_path": "s3://bucket/neff"})
    assert dict(os.environ) == before


def test_flags_are_appended_once() -> None:
    config = parse(
        {
            "option.neuron_optimize_level": "2",
            "option.enable_mixed_precision_accumulation": "true",
            "option.enable_saturate_infinity": "TRUE",
        }
    )
    env = {"NEURON_CC_FLAGS": IMAGE_FLAGS}
    changed = apply_environment(config, env)
    expected = f"{IMAGE_FLAGS} -O2 --enable-mixed-precision-accumulation --enable-saturate-infinity"
    assert changed == {"NEURON_CC_FLAGS": expected}
    assert env["NEURON_CC_FLAGS"] == expected
    assert apply_environment(config, env) == {}
    assert env == {"NEURON_CC_FLAGS": expected}


def test_false_booleans_add_no_flags() -> None:
    config = parse({"option.enable_mixed_precision_accumulation": "false", "option.enable_saturate_infinity": "False"})
    env = {"NEURON_CC_FLAGS": IMAGE_FLAGS}
    assert apply_environment(config, env) == {}
    assert env == {"NEURON_CC_FLAGS": IMAGE_FLAGS}


def test_no_options_no_variables() -> None:
    env: dict[str, str] = {}
    assert apply_environment(parse(), env) == {}
    assert env == {}


@pytest.mark.parametrize("existing", ["-O1", "--optlevel=3", "--optlevel 1"])
def test_configured_level_replaces_an_existing_one(existing: str) -> None:
    config = parse({"option.neuron_optimize_level": "2"})
    env = {"NEURON_CC_FLAGS": f"--logfile /tmp/compile.log {existing}"}
    apply_environment(config, env)
    assert env["NEURON_CC_FLAGS"] == "--logfile /tmp/compile.log -O2"


def test_s3_cache_url_is_kept() -> None:
    env: dict[str, str] = {}
    changed = apply_environment(parse({"option.compiled_graph_path": "s3://my-bucket/neff"}), env)
    assert changed == env == {"NEURON_COMPILE_CACHE_URL": "s3://my-bucket/neff"}


def test_local_cache_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    config = parse({"option.compiled_graph_path": "neff-cache"})
    apply_environment(config, env)
    assert env["NEURON_COMPILE_CACHE_URL"] == str(tmp_path / "neff-cache")
    assert apply_environment(config, env) == {}


def test_resolved_compile_cache_replaces_the_configured_path(tmp_path: Path) -> None:
    """A read-only mount copied elsewhere (or an S3 download) is what the compiler must use."""
    env: dict[str, str] = {}
    config = parse({"option.compiled_graph_path": "/opt/ml/model/neff"})
    copy = tmp_path / "writable-copy"
    apply_environment(config, env, compile_cache=copy)
    assert env["NEURON_COMPILE_CACHE_URL"] == str(copy)
    assert apply_environment(config, env, compile_cache=copy) == {}


def test_environment_changes_is_pure() -> None:
    config = parse({"option.neuron_optimize_level": "3", "option.compiled_graph_path": "s3://my-bucket/neff"})
    env = {"NEURON_CC_FLAGS": IMAGE_FLAGS}
    changes = environment_changes(config, env)
    assert changes == {"NEURON_CC_FLAGS": f"{IMAGE_FLAGS} -O3", "NEURON_COMPILE_CACHE_URL": "s3://my-bucket/neff"}
    assert env == {"NEURON_CC_FLAGS": IMAGE_FLAGS}


def test_apply_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURON_CC_FLAGS", "--verbose=35")
    monkeypatch.delenv("NEURON_COMPILE_CACHE_URL", raising=False)
    apply_environment(parse({"option.enable_saturate_infinity": "true"}))
    assert os.environ["NEURON_CC_FLAGS"] == "--verbose=35 --enable-saturate-infinity"
