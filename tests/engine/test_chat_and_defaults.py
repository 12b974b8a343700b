"""Chat templates and generation_config.json defaults."""

from __future__ import annotations

import json

import pytest

from djl_python.engine import GenerationDefaults, InvalidRequest, SamplingParams, render_chat


def test_render_chat_uses_the_tokenizers_template(tiny_tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = render_chat(tiny_tokenizer, messages)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert not render_chat(tiny_tokenizer, messages, add_generation_prompt=False).endswith("assistant\n")


def test_openai_text_parts_are_joined(tiny_tokenizer) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert "user\nab<|im_end|>" in render_chat(tiny_tokenizer, parts)


@pytest.mark.parametrize(
    "messages",
    [
        "hello",
        [],
        [{"content": "no role"}],
        [{"role": "wizard", "content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
        ["not an object"],
    ],
)
def test_malformed_messages_name_the_field(tiny_tokenizer, messages) -> None:
    with pytest.raises(InvalidRequest) as err:
        render_chat(tiny_tokenizer, messages)
    assert err.value.field == "messages"


def test_a_model_without_a_template_is_a_clear_error(tiny_tokenizer) -> None:
    class NoTemplate:
        chat_template = None

    with pytest.raises(InvalidRequest, match="no chat template"):
        render_chat(NoTemplate(), [{"role": "user", "content": "x"}])


def test_defaults_read_only_keys_present_and_fill_only_none(tmp_path) -> None:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"temperature": 0.6, "top_p": 0.9, "do_sample": True, "eos_token_id": [2, 7], "max_new_tokens": 999})
    )
    defaults = GenerationDefaults.from_model_dir(tmp_path)
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (0.6, 0.9, None)
    assert defaults.eos_token_ids == (2, 7) and defaults.do_sample
    filled = defaults.apply(SamplingParams(top_p=0.5))
    assert (filled.temperature, filled.top_p, filled.top_k) == (0.6, 0.5, None)
    # LMI decodes greedily unless asked, and keeps its own max_new_tokens default.
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
