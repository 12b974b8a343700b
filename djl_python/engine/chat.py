"""Chat messages to a prompt, with the model's own chat template.

The template is the tokenizer's (``tokenizer_config.json`` or
``chat_template.jinja``); we only validate the messages so a malformed request
gets a clear 400 naming ``messages`` instead of a Jinja traceback.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from djl_python.engine.request import InvalidRequest

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


def _content_text(content: Any, index: int) -> str:
    """OpenAI content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InvalidRequest("messages", f"message {index}: only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidRequest("messages", f"message {index}: content must be a string or a list of text parts")


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Check the shape of ``messages`` and return them as plain ``{role, content}`` dicts."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise InvalidRequest("messages", "must be a list of {role, content} objects")
    if not messages:
        raise InvalidRequest("messages", "must not be empty")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest("messages", f"message {index} must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest("messages", f"message {index}: role must be one of {sorted(ROLES)}, got {role!r}")
        if "content" not in message or message["content"] is None:
            raise InvalidRequest("messages", f"message {index}: missing content")
        clean.append({"role": role, "content": _content_text(message["content"], index)})
    return clean


def render_chat(tokenizer: Any, messages: Any, add_generation_prompt: bool = True) -> str:
    """Render ``messages`` with ``tokenizer``'s chat template into one prompt string.

    Raises ``InvalidRequest("messages", ...)`` for malformed messages, a model
    without a chat template, or a template that rejects the conversation (some
    templates raise on, say, a system message or roles that do not alternate).
    """
    clean = validate_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequest("messages", "this model has no chat template; send a plain prompt instead")
    try:
        return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # jinja2 TemplateError and raise_exception() from the template
        raise InvalidRequest("messages", f"the chat template rejected the messages: {err}") from err
