"""Every accepted option acts, is read by DJL's front end, or warns at load that it does not.

The groups are ``djl_python.config.honesty``'s; this test holds them to the code
(an option said to act is read outside ``config/``; one said to do nothing is
not), to ``docs/configuration.md`` (an inert option's row says so) and to the
log (each inert option, set, produces a warning naming the key).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from djl_python.config import ConfigError, HandlerConfig
from djl_python.config.honesty import FRONT_END_FIELDS, NO_EFFECT
from tests.config.helpers import parse, parse_error

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "djl_python"
# Read by the Neuron environment step, which lives in config/ itself (tests/config/test_environment.py).
ENVIRONMENT_FIELDS = {"neuron_optimize_level", "enable_mixed_precision_accumulation", "enable_saturate_infinity"}
# Fields that act for some values and warn for the others (see VALUE_WARNINGS).
VALUE_FIELDS = {"task", "model_loader", "partition_schema"}
# A valid, non-default value for each no-effect field.
SAMPLES = {"waiting_steps": "3", "mpi_mode": "true", "draft_model_id": "org/draft", "spec_length": "4",
           "low_cpu_mem_usage": "true", "enable_streaming": "true",
           "sequence_parallel": "true", "sequence_parallel_norm_threshold": "1", "mlp_out_weight_transpose": "true",
           "multi_node": "true", "neuron_cc_pipeline_factor": "2", "neuron_quant": "true"}
VALUE_WARNINGS = [("task", "summarization"), ("model_loader", "vllm"), ("partition_schema", "legacy")]


def _read_outside_config(field: str) -> bool:
    word = re.compile(rf"\b{field}\b")
    return any(word.search(p.read_text()) for p in PACKAGE.rglob("*.py") if "config" not in p.parts)


def _warnings(caplog, properties):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        parse(properties)
    return [r.getMessage() for r in caplog.records]


def test_every_field_is_in_exactly_one_group():
    for field in HandlerConfig.model_fields:
        groups = [field in NO_EFFECT, field in FRONT_END_FIELDS, field in ENVIRONMENT_FIELDS,
                  field in VALUE_FIELDS, _read_outside_config(field)]
        if field in VALUE_FIELDS or field in FRONT_END_FIELDS:
            continue  # may also be read by code (entryPoint by the worker, model_loader by the backend)
        assert sum(groups) == 1, (field, groups)


@pytest.mark.parametrize("field", sorted(NO_EFFECT))
def test_a_no_effect_option_warns_with_its_key_and_its_row_says_so(caplog, field):
    messages = _warnings(caplog, {f"option.{field}": SAMPLES[field]})
    assert any(m.startswith(f"option.{field} ") and "no effect" in m for m in messages), messages
    row = next(line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
               if line.startswith(f"| `option.{field}` |"))
    assert re.search(r"ignored|no effect", row), row


@pytest.mark.parametrize(("field", "value"), VALUE_WARNINGS)
def test_an_inert_value_warns_with_its_key(caplog, field, value):
    messages = _warnings(caplog, {f"option.{field}": value})
    assert any(m.startswith(f"option.{field}={value} has no effect") for m in messages), messages


def test_tensor_parallel_degree_0_from_djls_recommender_is_the_default_with_a_warning(caplog):
    """DJL 0.28 writes option.tensor_parallel_degree=<CUDA GPU count> into every model's
    properties when none is set (LmiConfigRecommender.java:129-138): 0 on inf2 and CPU. The load
    used to fail on a value the user never wrote; it is the default (1), and the log says why."""
    for properties, env in [({"option.tensor_parallel_degree": "0"}, {}),
                            ({}, {"OPTION_TENSOR_PARALLEL_DEGREE": "0"})]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="djl_python.config"):
            config = parse(properties, env)
        assert config.tensor_parallel_degree == 1 and config.resolved_tp_degree(2) == 1
        assert any("tensor_parallel_degree=0 is read as 1" in r.getMessage().lower() and "recommender" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        assert parse({"option.tensor_parallel_degree": "2"}).tensor_parallel_degree == 2
    assert not any("read as 1" in r.getMessage() for r in caplog.records)


def test_acting_values_are_silent(caplog):
    assert _warnings(caplog, {"option.task": "text-generation", "option.partition_schema": "optimum",
                              "option.model_loader": "optimum", "option.mpi_mode": "false"}) == []


def test_a_custom_output_formatter_fails_at_load():
    """DJL allows a callable's name; this handler runs no user code, so it is refused at load,
    naming the key, instead of failing every request with 400."""
    error = parse_error({"option.output_formatter": "my_formatter"})
    assert isinstance(error, ConfigError) and "option.output_formatter" in str(error) and "jsonlines" in str(error)
    assert parse({"option.output_formatter": "SSE"}).output_formatter == "sse"


def test_the_output_formats_are_the_api_layers():
    from typing import get_args

    from djl_python.api.lmi import CONTENT_TYPES
    from djl_python.config.lmi import OutputFormatterName

    assert set(get_args(OutputFormatterName)) == set(CONTENT_TYPES)


def test_max_rolling_batch_prefill_tokens_reaches_the_scheduler(monkeypatch, tmp_path):
    """An acting option no other test exercises end to end: the loader hands it to the engine."""
    from djl_python import loader
    from tests.engine.fake_backend import FakeBackend

    monkeypatch.setattr(loader, "resolve_artifacts", lambda config: type("A", (), {"model_dir": tmp_path})())
    monkeypatch.setattr(loader, "load_backend", lambda config, artifacts: FakeBackend())
    monkeypatch.setattr(loader, "load_tokenizer", lambda *a, **k: object())
    engine = loader.load_engine(parse({"option.max_rolling_batch_prefill_tokens": "77"}))
    assert engine.scheduler.max_prefill_tokens == 77


def test_scheduling_policy_reaches_the_scheduler_and_its_default_is_the_engines(monkeypatch, tmp_path, caplog):
    from typing import get_args

    from djl_python import loader
    from djl_python.config.serving import SchedulingPolicy, ServingProperties
    from djl_python.engine import scheduler
    from tests.engine.fake_backend import FakeBackend

    assert get_args(SchedulingPolicy) == get_args(scheduler.SchedulingPolicy)
    assert ServingProperties.model_fields["scheduling_policy"].default == scheduler.DEFAULT_POLICY
    monkeypatch.setattr(loader, "resolve_artifacts", lambda config: type("A", (), {"model_dir": tmp_path})())
    monkeypatch.setattr(loader, "load_backend", lambda config, artifacts: FakeBackend())
    monkeypatch.setattr(loader, "load_tokenizer", lambda *a, **k: object())
    with caplog.at_level(logging.INFO, logger=loader.logger.name):
        assert loader.load_engine(parse({"option.scheduling_policy": "fcfs"})).scheduler.policy == "fcfs"
    assert "order=fcfs" in caplog.text  # the load log line says which order runs
    assert loader.load_engine(parse({})).scheduler.policy == "shortest_prompt_first"


def test_every_acting_option_is_exercised_by_some_test():
    """Beyond parsing (test_coercion, test_rejections, test_docs): a test that uses the option."""
    parsing_only = {"test_coercion.py", "test_rejections.py", "test_docs.py", "test_sources.py"}
    sources = [p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name not in parsing_only]
    written = {"entry_point": "entryPoint"}
    for field in HandlerConfig.model_fields:
        if field in NO_EFFECT or field in FRONT_END_FIELDS - {"entry_point"}:
            continue
        word = re.compile(rf"\b{written.get(field, field)}\b")
        assert any(word.search(text) for text in sources), f"no test exercises option.{field}"
