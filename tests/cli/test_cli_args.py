"""djl-serve's flags: vLLM/TGI spellings mapped onto the one configuration, no prefix matching, the model rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from djl_python.config import ConfigError, load_config
from djl_python.config.model_source import choose_model
from djl_python.serving.cli import build_parser, cli_overrides, parse_args

DEFAULT = Path("/cache/SmolLM2-135M-Instruct")


def _config(argv: list[str], env: dict[str, str] | None = None):
    return load_config(env=env or {}, overrides=cli_overrides(parse_args(argv)))


def test_vllm_flags_set_the_same_options_as_the_file_and_environment() -> None:
    config = _config(["org/model", "--served-model-name", "m", "--max-model-len", "1024", "--max-num-seqs", "4",
                      "--dtype", "half", "--chat-template", "{{ x }}", "--api-key", "k",
                      "--allowed-origins", '["https://a.example"]'],
                     env={"OPTION_N_POSITIONS": "64", "OPTION_MAX_ROLLING_BATCH_SIZE": "2"})
    assert (config.model_id, config.served_model_name, config.n_positions, config.max_rolling_batch_size) == (
        "org/model", "m", 1024, 4)
    assert (config.dtype, config.chat_template, config.allowed_origins) == ("fp16", "{{ x }}", ["https://a.example"])
    assert config.api_key.get_secret_value() == "k"
    assert config.origin("n_positions") == "--max-model-len" and config.origin("model_id") == "MODEL"
    assert _config(["--model-id", "org/x"]).model_id == "org/x" == _config(["--model", "org/x"]).model_id


def test_a_bad_flag_value_is_reported_under_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        _config(["--max-num-seqs", "0", "--dtype", "int4"])
    assert set(info.value.keys) == {"--max-num-seqs", "--dtype"}


def test_no_prefix_matching(capsys: pytest.CaptureFixture[str]) -> None:
    # `--model X` was read as `--model-dir X`; now --model is its own flag and prefixes are refused.
    assert parse_args(["--model", "x"]).model_dir is None
    with pytest.raises(SystemExit) as info:
        parse_args(["--model-d", "/m"])
    assert info.value.code == 2 and "unrecognized arguments: --model-d" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["a/b", "--model", "c/d"])


def test_help_shows_defaults_and_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(build_parser().format_help().split())
    assert "(default: 8080)" in text and "(default: 127.0.0.1)" in text
    assert "[= option.max_rolling_batch_size / OPTION_MAX_ROLLING_BATCH_SIZE]" in text
    assert "Precedence: command line > serving.properties > OPTION_*" in text
    with pytest.raises(SystemExit) as info:
        parse_args(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("djl-serve ")


def test_missing_folder_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        choose_model(_config(["--model-dir", str(tmp_path / "nope")]), lambda: DEFAULT)
    assert info.value.keys == ("--model-dir",) and "no such folder" in str(info.value)
    with pytest.raises(ConfigError) as info:
        choose_model(load_config(env={"SERVING_LOAD_MODELS": f"test::Python={tmp_path / 'nope'}"}), lambda: DEFAULT)
    assert info.value.keys == ("SERVING_LOAD_MODELS",)
    with pytest.raises(ConfigError) as info:
        choose_model(_config([str(tmp_path / "gone")]), lambda: DEFAULT)
    assert info.value.keys == ("MODEL",)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no model"):
        choose_model(_config(["--model-dir", str(tmp_path)]), lambda: DEFAULT)


def test_default_model_only_when_none_is_configured(tmp_path: Path, tiny_llama: Path) -> None:
    chosen = choose_model(_config([]), lambda: DEFAULT)
    assert chosen.is_default and chosen.config.model_id == str(DEFAULT)
    assert chosen.source.startswith("the default model (no model configured;")
    (tmp_path / "serving.properties").write_text("option.max_rolling_batch_size=2\n")
    options_only = choose_model(_config(["--model-dir", str(tmp_path)]), lambda: DEFAULT)
    assert options_only.is_default and "serving.properties names no model" in options_only.source
    (tmp_path / "serving.properties").write_text(f"option.model_id={tiny_llama}\n")
    named = choose_model(_config(["--model-dir", str(tmp_path)]), lambda: pytest.fail("default prepared"))
    assert not named.is_default and named.source == f"option.model_id={tiny_llama}"
    files = choose_model(_config(["--model-dir", str(tiny_llama)]), lambda: pytest.fail("default prepared"))
    assert files.source == f"model files in --model-dir={tiny_llama}"
    env = choose_model(load_config(env={"HF_MODEL_ID": "org/m"}), lambda: pytest.fail("default prepared"))
    assert env.source == "HF_MODEL_ID=org/m"


def test_max_request_bytes_flag_and_tgi_spelling() -> None:
    """The body-size limit as a flag, also under TGI's --payload-limit."""
    assert _config(["--max-request-bytes", "8MiB"]).max_request_bytes == 8 * 2**20
    config = _config(["--payload-limit", "2000000"], env={"OPTION_MAX_REQUEST_BYTES": "1"})
    assert config.max_request_bytes == 2_000_000 and config.origin("max_request_bytes") == "--max-request-bytes"
