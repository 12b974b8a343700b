"""The model's text -> OpenAI ``tool_calls``, whole or streamed, for each tool mode.

Formats, as vLLM's parsers read them (vllm-project/vllm ``vllm/tool_parsers/``):

* ``hermes`` (Hermes 2 Pro, Qwen 2.5+): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
  repeated for parallel calls; an unclosed last call counts. Text before the first tag is the
  content; text after the calls is dropped. Any call that is not valid JSON with ``name`` and
  ``arguments`` makes the whole output plain content (no calls).
* ``llama3_json`` (Llama 3.1+ JSON tool calling): an optional ``<|python_tag|>``, then JSON objects
  ``{"name": ..., "parameters" | "arguments": {...}}`` separated by ``;``. The calls start at the first
  ``{`` (or the tag); text before it is the content (vLLM drops it); every later ``{`` is read as
  the start of an object, and one that does not parse makes the whole output plain content.
* ``required``: the grammar's JSON list of ``{"name", "parameters"}``; named: the text is the
  arguments of the forced function.

Streaming (``ToolCallStream``): a named call streams its arguments as they come; ``required`` and
``auto`` stream content while no call can have started (hermes holds back a possible partial
``<tool_call>``, llama3_json a possible partial ``<|python_tag|>``, and both buffer from where a
call may start) and send each call whole,
with its ``id``, ``name`` and ``arguments``, at the end of the output. The concatenated deltas
always equal the whole (non-streamed) result. With ``parallel_tool_calls`` false only the first
call is kept. Call ids are ``chatcmpl-tool-<32 hex>``, as vLLM's.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from djl_python.api.tools import ToolPlan

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
_HERMES_CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text
    id: str = ""

    def as_message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def as_delta(self, index: int) -> dict[str, Any]:
        return {"index": index, **self.as_message()}


def call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def _call(name: Any, arguments: Any) -> ToolCall:
    if not isinstance(name, str):
        raise ValueError("a tool call's name must be a string")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(name, text, call_id())


def parse_hermes(text: str) -> tuple[Optional[str], list[ToolCall]]:
    if HERMES_OPEN not in text:
        return text, []
    try:
        calls = []
        for closed, unclosed in _HERMES_CALL.findall(text):
            obj = json.loads(closed or unclosed)
            calls.append(_call(obj["name"], obj["arguments"]))
    except (ValueError, KeyError, TypeError):
        return text, []
    content = text[: text.index(HERMES_OPEN)]
    return content or None, calls


def parse_llama3_json(text: str) -> tuple[Optional[str], list[ToolCall]]:
    start = _llama3_start(text)
    if start == -1:
        return text, []
    body = text[start:].replace(PYTHON_TAG, "")
    decoder = json.JSONDecoder()
    calls, i = [], body.find("{")
    try:
        while i != -1:
            obj, end = decoder.raw_decode(body, i)
            arguments = obj["arguments"] if "arguments" in obj else obj["parameters"]
            calls.append(_call(obj["name"], arguments))
            i = body.find("{", end)
    except (ValueError, KeyError, TypeError):
        return text, []
    if not calls:
        return text, []
    return text[:start] or None, calls


def _llama3_start(text: str, begin: int = 0) -> int:
    """Where a llama3_json call may start: the first ``<|python_tag|>`` or ``{`` from ``begin`` (-1: none)."""
    found = [i for i in (text.find(PYTHON_TAG, begin), text.find("{", begin)) if i != -1]
    return min(found) if found else -1


def parse_required(text: str) -> tuple[Optional[str], list[ToolCall]]:
    try:
        items = json.loads(text)
        calls = [_call(item["name"], item["parameters"]) for item in items]
    except (ValueError, KeyError, TypeError):
        return text, []  # cut short (max_tokens): the text is all there is
    return "", calls


PARSERS = {"hermes": parse_hermes, "llama3_json": parse_llama3_json}


def extract(plan: ToolPlan, text: str) -> tuple[Optional[str], list[ToolCall]]:
    """The message's ``content`` and ``tool_calls`` for the whole output ``text``."""
    if plan.mode == "named":
        calls = [ToolCall(plan.function or "", text, call_id())] if text.strip() else []
        content: Optional[str] = ""
    elif plan.mode == "required":
        content, calls = parse_required(text)
    elif plan.mode == "auto" and plan.parser is not None:
        content, calls = PARSERS[plan.parser](text)
    else:
        return text, []
    return content, calls if plan.parallel else calls[:1]


class ToolCallStream:
    """Streams one request's content and tool-call deltas; see the module docstring."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.text = ""  # everything generated so far
        self._sent = 0  # characters of ``text`` already sent as content
        self._buffering = plan.mode == "required"
        self._named_id = call_id() if plan.mode == "named" else ""
        self.calls_made = False

    def feed(self, delta: str) -> tuple[str, list[dict[str, Any]]]:
        """Content to send now, and tool-call deltas."""
        self.text += delta
        if self.plan.mode == "named":
            if not delta:
                return "", []
            first = not self.calls_made
            self.calls_made = True
            function: dict[str, Any] = {"arguments": delta}
            if first:
                return "", [{"index": 0, "id": self._named_id, "type": "function",
                             "function": {"name": self.plan.function, **function}}]
            return "", [{"index": 0, "function": function}]
        if self._buffering or self.plan.mode != "auto":
            return "", []
        safe = self._safe_content_end()
        content, self._sent = self.text[self._sent: safe], max(self._sent, safe)
        return content, []

    def _safe_content_end(self) -> int:
        """How much of ``text`` is surely content (auto mode); switches to buffering at a call."""
        if self.plan.parser == "hermes":
            start = self.text.find(HERMES_OPEN, self._sent)
            if start != -1:
                self._buffering = True
                return start
            return len(self.text) - _partial_suffix(self.text, HERMES_OPEN)
        start = _llama3_start(self.text, self._sent)
        if start != -1:
            self._buffering = True
            return start
        return len(self.text) - _partial_suffix(self.text, PYTHON_TAG)

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end of the output: the content held back and every call not yet sent."""
        if self.plan.mode == "named":
            return "", []
        rest = self.text[self._sent:]
        if not self._buffering:
            return rest, []
        content, calls = extract(self.plan, self.text)
        if not calls:
            return rest, []
        self.calls_made = True
        sent_content = self.text[: self._sent]
        extra = (content or "")[len(sent_content):] if content and content.startswith(sent_content) else ""
        return extra, [call.as_delta(i) for i, call in enumerate(calls)]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def finish_reason(plan: Optional[ToolPlan], calls_made: bool, reason: Optional[str]) -> Optional[str]:
    """OpenAI's ``finish_reason``: ``tool_calls`` when the output was read as calls and ended normally
    (a named function keeps ``stop``, as vLLM and OpenAI report it)."""
    if plan is not None and calls_made and plan.mode in ("auto", "required") and reason == "stop":
        return "tool_calls"
    return reason
