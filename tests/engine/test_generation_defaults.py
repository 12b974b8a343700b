"""generation_config.json defaults (``GenerationDefaults``)."""

from __future__ import annotations

import json

from djl_python.engine import GenerationDefaults, SamplingParams


def test_defaults_read_only_keys_present_and_fill_only_none(tmp_path) -> None:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"temperature": 0.6, "top_p": 0.9, "do_sample": True, "eos_token_id": [2, 7], "max_new_tokens": 999})
    )
    defaults = GenerationDefaults.from_model_dir(tmp_path)
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (0.6, 0.9, None)
    assert defaults.eos_token_ids == (2, 7)
    assert not hasattr(defaults, "do_sample")  # not taken from the file (see the module docstring)
    filled = defaults.apply(SamplingParams(top_p=0.5))
    assert (filled.temperature, filled.top_p, filled.top_k) == (0.6, 0.5, None)
    # do_sample and max_new_tokens are not taken from the file.
    assert filled.greedy and filled.max_new_tokens == 30


def test_invalid_or_missing_config_gives_neutral_defaults(tmp_path) -> None:
    assert GenerationDefaults.from_model_dir(tmp_path) == GenerationDefaults()
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_p": 0, "repetition_penalty": 1.2}))
    defaults = GenerationDefaults.from_model_dir(tmp_path)
    assert defaults.top_p is None and defaults.repetition_penalty == 1.2
    (tmp_path / "generation_config.json").write_text("{not json")
    assert GenerationDefaults.from_model_dir(tmp_path) == GenerationDefaults()


def test_real_model_defaults(smollm2_dir) -> None:
    defaults = GenerationDefaults.from_model_dir(smollm2_dir)
    assert defaults.eos_token_ids == (2,) and defaults.temperature is None
