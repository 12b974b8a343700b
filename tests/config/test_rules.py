"""Rules spanning several options, and the derived properties and helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from djl_python.config import ConfigError, HandlerConfig, load_on_device_embedding_config
from tests.config.helpers import parse, parse_error


def test_batch_size_with_rolling_batch_names_both_keys() -> None:
    error = parse_error({"option.batch_size": "4"}, env={"OPTION_ROLLING_BATCH": "auto"})
    assert error.keys == ("option.batch_size, OPTION_ROLLING_BATCH",)
    assert "option.batch_size=4 cannot be combined with OPTION_ROLLING_BATCH=auto" in str(error)


def test_batch_size_alone_disables_rolling_batch() -> None:
    config = parse({"option.batch_size": "4"})
    assert (config.batch_size, config.rolling_batch, config.rolling_batch_enabled) == (4, "disable", False)


def test_streaming_static_batches_is_rejected() -> None:
    error = parse_error({"option.batch_size": "2", "option.enable_streaming": "true"})
    assert "option.enable_streaming" in error.keys[0] and "option.batch_size" in error.keys[0]


def test_context_length_estimate_must_fit_n_positions() -> None:
    error = parse_error({"option.context_length_estimate": "256,1024,4096", "option.n_positions": "2048"})
    assert "option.context_length_estimate has buckets [4096] longer than option.n_positions=2048" in str(error)
    assert parse({"option.context_length_estimate": "256,2048", "option.n_positions": "2048"}).context_length_estimate == [
        256,
        2048,
    ]


@pytest.mark.parametrize(
    ("properties", "fragment"),
    [
        ({"option.model_loader": "tnx", "option.partition_schema": "optimum"}, "option.model_loader=tnx cannot write"),
        ({"option.model_loader": "optimum", "option.partition_schema": "legacy"}, "only writes option.partition_schema=optimum"),
        (
            {"option.model_loader": "vllm", "option.save_mp_checkpoint_path": "/tmp/out"},
            "option.save_mp_checkpoint_path (ahead-of-time partitioning) is not available with option.model_loader=vllm",
        ),
    ],
)
def test_loader_schema_rules(properties: dict[str, str], fragment: str) -> None:
    assert fragment in str(parse_error(properties))


@pytest.mark.parametrize(
    ("schema", "loader"), [("optimum", "optimum"), ("legacy", "tnx"), ("safetensors", "tnx"), ("compile_only", "tnx")]
)
def test_schema_alone_implies_loader(schema: str, loader: str) -> None:
    assert parse({"option.partition_schema": schema}).model_loader == loader


@pytest.mark.parametrize(("dtype", "amp"), [("fp32", "f32"), ("float16", "f16"), ("bf16", "bf16")])
def test_amp_is_derived_from_dtype(dtype: str, amp: str) -> None:
    assert parse({"option.dtype": dtype}).amp == amp


def test_amp_alone_sets_dtype() -> None:
    config = parse({"option.amp": "bf16"})
    assert (config.dtype, config.amp) == ("bf16", "bf16")


def test_amp_consistent_with_dtype_is_accepted() -> None:
    assert parse({"option.amp": "f16", "option.dtype": "float16"}).dtype == "fp16"


def test_amp_contradicting_dtype_names_both_keys() -> None:
    error = parse_error({"option.amp": "f32"}, env={"OPTION_DTYPE": "bf16"})
    assert "option.amp=f32 contradicts OPTION_DTYPE=bf16" in str(error)


def test_load_in_8bit_is_a_synonym_of_quantize() -> None:
    config = parse({"option.load_in_8bit": "true"})
    assert (config.quantize, config.load_in_8bit) == ("static_int8", True)
    assert parse({"option.quantize": "static_int8"}).load_in_8bit is True
    error = parse_error({"option.load_in_8bit": "false", "option.quantize": "static_int8"})
    assert "option.load_in_8bit=false contradicts option.quantize=static_int8" in str(error)


@pytest.mark.parametrize(("tp", "cores", "expected"), [("max", 8, 8), ("2", 8, 2), ("4", 2, 4)])
def test_resolved_tp_degree(tp: str, cores: int, expected: int) -> None:
    assert parse({"option.tensor_parallel_degree": tp}).resolved_tp_degree(cores) == expected


def test_resolved_tp_degree_max_without_cores() -> None:
    with pytest.raises(ValueError, match="no accelerator cores"):
        parse({"option.tensor_parallel_degree": "max"}).resolved_tp_degree(0)


@pytest.mark.parametrize(
    ("properties", "model_type", "expected"),
    [
        ({}, "llama", "continuous_batching"),
        ({}, "Mistral", "continuous_batching"),
        ({}, "gpt2", "naive_rolling_batch"),
        ({"option.max_rolling_batch_size": "1"}, "llama", "naive_rolling_batch"),
        ({"option.rolling_batch_strategy": "naive_rolling_batch"}, "llama", "naive_rolling_batch"),
        ({"option.rolling_batch_strategy": "continuous_batching"}, "opt", "continuous_batching"),
        ({"option.rolling_batch": "disable"}, "llama", None),
    ],
)
def test_effective_rolling_batch_strategy(properties: dict[str, str], model_type: str, expected: str | None) -> None:
    assert parse(properties).effective_rolling_batch_strategy(model_type) == expected


def test_on_device_embedding_config_is_loaded_by_helper(tmp_path: Path) -> None:
    path = tmp_path / "embed.json"
    path.write_text(json.dumps({"max_length": 128, "top_k": 50}))
    config = parse({"option.on_device_embedding_config": str(path)})
    assert config.on_device_embedding_config == str(path)
    assert load_on_device_embedding_config(config.on_device_embedding_config) == {"max_length": 128, "top_k": 50}
    assert load_on_device_embedding_config(None) is None


@pytest.mark.parametrize(("content", "fragment"), [(None, "cannot read"), ("{oops", "not valid JSON"), ("[1]", "JSON object")])
def test_on_device_embedding_config_errors(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "embed.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_on_device_embedding_config(str(path))
    assert info.value.keys == ("option.on_device_embedding_config",)


def test_model_id_or_path() -> None:
    assert parse({"option.model_id": "org/m", "option.model_dir": "/m"}).model_id_or_path == "org/m"
    assert parse({"option.model_dir": "/m"}).model_id_or_path == "/m"
    assert HandlerConfig().model_id_or_path is None
