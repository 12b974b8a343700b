"""Serving options, command-line overrides, origins, key suggestions and the SERVING_LOAD_MODELS name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from djl_python.config import ConfigError, load_config
from djl_python.config.chat_template import load_chat_template
from djl_python.config.sources import OptionValue
from tests.config.helpers import parse, parse_error


def test_serving_load_models_name_is_the_served_model_name() -> None:
    # docs/configuration.md's own example: DJL serves it as /predictions/test.
    assert parse(env={"SERVING_LOAD_MODELS": "test::Python=/opt/ml/model"}).served_model_name == "test"
    assert parse(env={"SERVING_LOAD_MODELS": "llama:v2::Python=/m"}).served_model_name == "llama"
    assert parse(env={"SERVING_LOAD_MODELS": "/opt/ml/model"}).served_model_name is None
    both = parse(env={"SERVING_LOAD_MODELS": "test::/m", "OPTION_SERVED_MODEL_NAME": "mine"})
    assert both.served_model_name == "mine"


def test_max_model_len_points_to_n_positions_not_model_loader(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djl_python.config"):
        parse({"option.max_model_len": "4096", "option.max_num_seqs": "8"})
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "model_loader" not in messages
    assert "option.max_model_len (max_model_len is vLLM's name; here it is n_positions)" in messages
    assert "option.max_num_seqs (max_num_seqs is vLLM's name; here it is max_rolling_batch_size)" in messages


def test_overrides_beat_the_file_and_the_environment_and_keep_their_flag_name(tmp_path: Path) -> None:
    (tmp_path / "serving.properties").write_text("option.max_rolling_batch_size=4\noption.n_positions=64\n")
    overrides = {"max_rolling_batch_size": OptionValue("2", "--max-num-seqs"),
                 "model_dir": OptionValue(str(tmp_path), "--model-dir")}
    config = load_config(env={"OPTION_N_POSITIONS": "32", "OPTION_DTYPE": "bf16"}, overrides=overrides)
    assert (config.max_rolling_batch_size, config.n_positions, config.dtype) == (2, 64, "bf16")
    assert config.origin("max_rolling_batch_size") == "--max-num-seqs"
    assert config.origin("n_positions") == "option.n_positions"
    assert config.origin("dtype") == "OPTION_DTYPE"
    assert config.origin("model_dir") == "--model-dir"
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"n_positions": OptionValue("many", "--max-model-len")})
    assert info.value.keys == ("--max-model-len",)


def test_api_key_never_shows_in_repr_or_errors() -> None:
    config = parse({"option.api_key": "top-secret-value"})
    assert config.api_key.get_secret_value() == "top-secret-value"
    assert "top-secret-value" not in repr(config) and "top-secret-value" not in str(config.model_dump())


@pytest.mark.parametrize(("key", "raw", "fragment"), [
    ("option.memory_budget", "lots", "number of bytes"),
    ("option.memory_budget", "0", "greater than or equal to 1"),
    ("option.allowed_origins", "[not json", "JSON list"),
])
def test_serving_options_reject_bad_values(key: str, raw: str, fragment: str) -> None:
    error = parse_error({key: raw})
    assert error.keys == (key,) and fragment in str(error)


def test_chat_template_is_a_file_or_a_template(tmp_path: Path) -> None:
    file = tmp_path / "chat.jinja"
    file.write_text("{{ messages[0]['content'] }}")
    assert load_chat_template(str(file)) == "{{ messages[0]['content'] }}"
    assert load_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}").startswith("{% for")
    with pytest.raises(ConfigError) as info:
        load_chat_template(str(tmp_path / "missing.jinja"), "--chat-template")
    assert info.value.keys == ("--chat-template",) and "neither a readable file" in str(info.value)
