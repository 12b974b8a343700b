"""Where values come from: the properties format, OPTION_* variables and precedence."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from djl_python.config import ConfigError, load_config
from djl_python.config.sources import env_option_key, parse_properties, parse_serving_load_models
from tests.config.helpers import parse


def test_properties_format() -> None:
    text = """
    # comment
    ! another comment
    engine = Python
    option.model_id=s3://bucket/models/llama
    option.dtype: fp16
       option.max_rolling_batch_size   =   8
    option.flag
    option.dtype=bf16
    """
    assert parse_properties(text) == {
        "engine": "Python",
        "option.model_id": "s3://bucket/models/llama",
        "option.dtype": "bf16",  # the later duplicate wins, as in Java
        "option.max_rolling_batch_size": "8",
        "option.flag": "",
    }


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("OPTION_MAX_ROLLING_BATCH_SIZE", "max_rolling_batch_size"),
        ("OPTION_ENTRYPOINT", "entryPoint"),
        ("OPTION_ENGINE", "engine"),
        ("OPTION_N_POSITIONS", "n_positions"),
        ("OPTION_mixedCase", "mixedCase"),
        ("OPTION_", None),
        ("HF_MODEL_ID", None),
    ],
)
def test_env_option_key(name: str, key: str | None) -> None:
    assert env_option_key(name) == key


def test_properties_file_wins_over_env() -> None:
    config = parse(
        {"option.max_rolling_batch_size": "8", "option.tensor_parallel_degree": "2"},
        env={"OPTION_MAX_ROLLING_BATCH_SIZE": "64", "OPTION_N_POSITIONS": "1024"},
    )
    assert (config.max_rolling_batch_size, config.tensor_parallel_degree, config.n_positions) == (8, 2, 1024)


def test_option_prefix_wins_over_top_level_key() -> None:
    assert parse({"batch_size": "1", "option.batch_size": "4"}).batch_size == 4


def test_empty_values_are_unset() -> None:
    config = parse({"option.dtype": ""}, env={"OPTION_DTYPE": "", "OPTION_MODEL_ID": "  ", "HF_MODEL_ID": "org/m"})
    assert config.dtype is None
    assert config.model_id == "org/m"


def test_hf_model_id_is_an_alias_for_model_id() -> None:
    assert parse(env={"HF_MODEL_ID": "org/model"}).model_id == "org/model"
    assert parse(env={"HF_MODEL_ID": "org/model", "OPTION_MODEL_ID": "org/other"}).model_id == "org/other"
    assert parse({"option.model_id": "org/file"}, env={"HF_MODEL_ID": "org/model"}).model_id == "org/file"


@pytest.mark.parametrize(
    ("value", "name", "engine", "url", "local"),
    [
        ("test::Python=/opt/ml/model", "test", "Python", "/opt/ml/model", "/opt/ml/model"),
        ("Python=file:///opt/ml/model", None, "Python", "file:///opt/ml/model", "/opt/ml/model"),
        ("m:1::Python=s3://bucket/model", "m:1", "Python", "s3://bucket/model", None),
        ("/opt/ml/model", None, None, "/opt/ml/model", "/opt/ml/model"),
    ],
)
def test_parse_serving_load_models(value: str, name: str | None, engine: str | None, url: str, local: str | None) -> None:
    model = parse_serving_load_models(value)
    assert (model.name, model.engine, model.url, model.local_path) == (name, engine, url, local)


def test_serving_load_models_fills_model_dir_and_engine() -> None:
    config = parse(env={"SERVING_LOAD_MODELS": "test::Python=/opt/ml/model"})
    assert (config.model_dir, config.engine, config.model_id_or_path) == ("/opt/ml/model", "Python", "/opt/ml/model")
    assert parse({"engine": "MPI"}, env={"SERVING_LOAD_MODELS": "test::Python=/opt/ml/model"}).engine == "MPI"


def test_serving_load_models_remote_url_is_a_model_id() -> None:
    assert parse(env={"SERVING_LOAD_MODELS": "test::Python=s3://bucket/llama"}).model_id == "s3://bucket/llama"


def test_serving_load_models_with_two_models_is_an_error() -> None:
    with pytest.raises(ConfigError, match="exactly one model") as info:
        parse(env={"SERVING_LOAD_MODELS": "a::Python=/m1,b::Python=/m2"})
    assert info.value.keys == ("SERVING_LOAD_MODELS",)


def test_load_config_reads_serving_properties_from_model_dir(tmp_path: Path) -> None:
    (tmp_path / "serving.properties").write_text("engine=Python\noption.max_rolling_batch_size=4\n")
    config = load_config(tmp_path, env={"OPTION_MAX_ROLLING_BATCH_SIZE": "16", "OPTION_DTYPE": "bf16"})
    assert (config.model_dir, config.max_rolling_batch_size, config.dtype) == (str(tmp_path), 4, "bf16")


def test_load_config_finds_the_folder_through_serving_load_models(tmp_path: Path) -> None:
    (tmp_path / "serving.properties").write_text("option.n_positions=512\n")
    config = load_config(env={"SERVING_LOAD_MODELS": f"test::Python={tmp_path}"})
    assert (config.model_dir, config.n_positions) == (str(tmp_path), 512)


def test_explicit_model_dir_wins(tmp_path: Path) -> None:
    config = load_config(tmp_path, properties={"option.model_dir": "/elsewhere"}, env={"OPTION_MODEL_DIR": "/env"})
    assert config.model_dir == str(tmp_path)


def test_missing_serving_properties_is_fine(tmp_path: Path) -> None:
    assert load_config(tmp_path, env={"OPTION_N_POSITIONS": "256"}).n_positions == 256


def test_file_errors_name_the_file_key(tmp_path: Path) -> None:
    (tmp_path / "serving.properties").write_text("option.max_rolling_batch_size=lots\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert info.value.keys == ("option.max_rolling_batch_size",)


def test_unknown_key_warns_with_suggestion(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        config = parse({"option.tensor_paralel_degree": "4"}, env={"OPTION_MAX_ROLING_BATCH_SIZE": "8"})
    assert config.tensor_parallel_degree == 1  # the typo is not applied
    messages = [r.getMessage() for r in caplog.records]
    assert any("option.tensor_paralel_degree" in m and "did you mean tensor_parallel_degree?" in m for m in messages)
    assert any("OPTION_MAX_ROLING_BATCH_SIZE" in m and "did you mean max_rolling_batch_size?" in m for m in messages)


def test_unknown_key_without_close_match_still_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        parse({"option.zzzz": "1"})
    assert [r.getMessage() for r in caplog.records] == ["ignoring unknown configuration key option.zzzz"]


def test_djl_front_end_keys_are_ignored_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        parse({"minWorkers": "1", "maxWorkers": "1", "max_batch_delay": "100", "option.device_id": "0"})
    assert caplog.records == []


def test_options_without_effect_warn_when_set(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        parse({"option.draft_model_id": "org/draft"}, env={"OPTION_MPI_MODE": "false"})
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["option.draft_model_id is accepted for compatibility but has no effect in this handler"]
