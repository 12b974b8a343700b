"""Chat messages: the one schema, the one flattener, the one place a template runs.

Every chat route (LMI ``/invocations`` and the DJL handler with ``messages``,
OpenAI ``/v1/chat/completions``) validates messages with ``ChatMessage`` and
renders them with ``render_chat``, so the same messages get the same 400 (the
same field path) and the same prompt everywhere.

The template is the tokenizer's (``tokenizer_config.json`` or
``chat_template.jinja``); messages are validated first so a malformed request
gets a clear 400 naming ``messages.<i>...`` instead of a Jinja traceback.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field

from djl_python.api.body import FailFastList, validate
from djl_python.api.tools import history_tool_calls
from djl_python.engine.request import InvalidRequest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ContentPart(_Strict):
    """An OpenAI content part; only text parts are supported."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, FailFastList[ContentPart], None] = None
    name: Optional[str] = None
    tool_call_id: Optional[str] = None  # a tool message: the call it answers
    tool_calls: Optional[FailFastList[dict[str, Any]]] = None  # an assistant message: the calls it made


class _Messages(_Strict):
    messages: FailFastList[ChatMessage] = Field(min_length=1)


def flatten(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the plain ``{role, content[, name, tool_call_id, tool_calls]}`` dicts chat templates
    expect (text parts joined, a missing content as ""; tool-call arguments as objects, as vLLM
    passes them)."""
    flat = []
    for i, m in enumerate(messages):
        content = "".join(p.text for p in m.content) if isinstance(m.content, list) else (m.content or "")
        entry: dict[str, Any] = {"role": m.role, "content": content}
        if m.name is not None:
            entry["name"] = m.name
        if m.tool_call_id is not None:
            entry["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            entry["tool_calls"] = history_tool_calls(m.tool_calls, f"messages.{i}.tool_calls")
        flat.append(entry)
    return flat


def parse_messages(messages: Any) -> list[ChatMessage]:
    """Validate raw messages (a list of objects) with the chat schema."""
    return validate(_Messages, {"messages": messages}).messages


def render_chat(tokenizer: Any, messages: Sequence[Any], add_generation_prompt: bool = True,
                tools: Optional[list[dict[str, Any]]] = None) -> str:
    """Render ``messages`` (``ChatMessage``s or raw objects) with ``tokenizer``'s chat template
    (and ``tools``, OpenAI tool objects, for templates that render them).

    Raises ``InvalidRequest("messages...", ...)`` for malformed messages, a model
    without a chat template, or a template that rejects the conversation (some
    templates raise on, say, a system message or roles that do not alternate).
    """
    if not (isinstance(messages, list) and messages and all(isinstance(m, ChatMessage) for m in messages)):
        messages = parse_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequest("messages", "this model has no chat template; send a plain prompt instead")
    try:
        extra = {"tools": tools} if tools else {}
        return tokenizer.apply_chat_template(flatten(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt, **extra)
    except Exception as err:  # jinja2 TemplateError and raise_exception() from the template
        raise InvalidRequest("messages", f"the chat template rejected the messages: {err}") from err


