"""The one chat path: schema, flattener and template (``djl_python.api.chat``)."""

from __future__ import annotations

import pytest

from djl_python.api.chat import render_chat
from djl_python.engine import InvalidRequest


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
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
        ["not an object"],
        [{"role": "user", "content": "x", "extra": 1}],
    ],
)
def test_malformed_messages_name_the_field(tiny_tokenizer, messages) -> None:
    with pytest.raises(InvalidRequest) as err:
        render_chat(tiny_tokenizer, messages)
    assert err.value.field.startswith("messages")


def test_a_model_without_a_template_is_a_clear_error(tiny_tokenizer) -> None:
    class NoTemplate:
        chat_template = None

    with pytest.raises(InvalidRequest, match="no chat template"):
        render_chat(NoTemplate(), [{"role": "user", "content": "x"}])




def test_a_message_without_content_is_empty_text(tiny_tokenizer) -> None:
    # OpenAI allows content null (an assistant turn that only called tools); every route agrees.
    assert "user\n<|im_end|>" in render_chat(tiny_tokenizer, [{"role": "user"}])
