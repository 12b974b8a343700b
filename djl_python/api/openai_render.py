"""OpenAI response objects: ``text_completion``, ``chat.completion`` and their chunks.

The one builder of OpenAI shapes: the OpenAI routes stream its chunks as
server-sent events ending with ``data: [DONE]``, and LMI's ``json_chat`` /
``jsonlines_chat`` formats reuse ``completion`` and ``chunk``. With
``stream_options.include_usage`` every chunk carries ``"usage": null`` and one
last chunk carries the usage with an empty ``choices`` list. A failure after the
stream started is an ``{"error": {...}}`` event (the OpenAI client raises it as
``APIError``).

``prefix`` leads the text (legacy completions' ``echo``: the prompt); streamed,
it is part of the first chunk, as vLLM sends it.

A chat request with tools (``tools``: its ``ToolPlan``) has its text read as tool calls
(``djl_python.api.tool_parsers``): ``message.tool_calls`` whole, ``delta.tool_calls`` streamed,
and ``finish_reason: "tool_calls"`` when calls ended the output.

Log-prob entries use each token's own text (``RequestOutput.token_texts``),
as OpenAI does; ``text_offset`` accumulates those texts.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from djl_python import __version__
from djl_python.api import finish
from djl_python.api.errors import ApiError
from djl_python.api.render import dumps, generation_failed, sse
from djl_python.api.tool_parsers import ToolCallStream, extract, finish_reason
from djl_python.api.tools import ToolPlan
from djl_python.engine.request import RequestOutput


# OpenAI's field naming the serving configuration; TGI's chat client requires it to be a string.
SYSTEM_FINGERPRINT = f"djl-python-{__version__}"


def _entry(text: str, logprob: Optional[float]) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def error_object(err: ApiError) -> dict[str, Any]:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.status}}


class OpenAiRenderer:
    """Renders one request (chat or legacy completion); see ``djl_python.api.render``."""

    def __init__(self, *, chat: bool, request_id: str, model: str, logprobs: bool, stream: bool = False,
                 include_usage: bool = False, created: Optional[int] = None, prefix: str = "",
                 tools: Optional[ToolPlan] = None) -> None:
        self.chat = chat
        self.tools = tools if tools is not None and tools.calls_tools else None
        self._tool_stream = ToolCallStream(self.tools) if self.tools is not None else None
        self.prefix = prefix
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self.model = model
        self.logprobs = logprobs
        self.stream = stream
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.content_type = "text/event-stream" if stream else "application/json"
        self.done = False
        self._first = True
        self._last: Optional[RequestOutput] = None

    # -- building blocks ---------------------------------------------------------------------

    def envelope(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": SYSTEM_FINGERPRINT}

    @staticmethod
    def usage(out: RequestOutput) -> dict[str, int]:
        return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.generated_tokens,
                "total_tokens": out.prompt_tokens + out.generated_tokens}

    def choice(self, outputs: Sequence[RequestOutput], text: str, chunk: bool, first: bool = False) -> dict[str, Any]:
        last = outputs[-1]
        choice: dict[str, Any] = {"index": 0}
        calls_made = False
        if self.chat and chunk:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            if self._tool_stream is not None:
                delta["content"], calls = self._tool_stream.feed(text)
                if last.finished:
                    more_content, more_calls = self._tool_stream.finish()
                    delta["content"] += more_content
                    calls += more_calls
                if calls:
                    delta["tool_calls"] = calls
                calls_made = self._tool_stream.calls_made
            choice["delta"] = delta
        elif self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.tools is not None:
                message["content"], tool_calls = extract(self.tools, text)
                if tool_calls:
                    message["tool_calls"] = [call.as_message() for call in tool_calls]
                    calls_made = True
            choice["message"] = message
        else:
            choice["text"] = text
        choice["logprobs"] = self._logprobs(outputs) if self.logprobs else None
        reason = finish.openai(last.finish_reason) if last.finished else None
        choice["finish_reason"] = finish_reason(self.tools, calls_made, reason)
        return choice

    def completion(self, outputs: Sequence[RequestOutput]) -> dict[str, Any]:
        """The whole ``chat.completion`` / ``text_completion`` object."""
        text = self.prefix + "".join(out.text for out in outputs)
        return {**self.envelope(False), "choices": [self.choice(outputs, text, False)],
                "usage": self.usage(outputs[-1])}

    def chunk(self, out: RequestOutput) -> Optional[dict[str, Any]]:
        """The next chunk object, or None when ``out`` adds nothing (no text, no token, not final)."""
        if not (out.text or out.token_ids or out.finished or self._first):
            return None
        text = self.prefix + out.text if self._first else out.text
        chunk = {**self.envelope(True), "choices": [self.choice([out], text, True, self._first)]}
        self._first = False
        return chunk

    def _logprobs(self, outputs: Sequence[RequestOutput]) -> dict[str, Any]:
        texts, lps, tops = [], [], []
        for out in outputs:
            texts += out.token_texts
            lps += out.logprobs
            for ids, names in zip(out.top_logprobs, out.top_logprob_texts):
                # A list per token: different ids can decode to the same text (partial UTF-8).
                tops.append([(names[t], v) for t, v in ids.items()])
        if self.chat:
            return {"content": [{**_entry(text, lp), "top_logprobs": [_entry(t, v) for t, v in
                                                                      (tops[i] if i < len(tops) else [])]}
                                for i, (text, lp) in enumerate(zip(texts, lps))]}
        offsets, pos = [], 0
        for text in texts:
            offsets.append(pos)
            pos += len(text)
        return {"tokens": texts, "token_logprobs": lps, "top_logprobs": [dict(t) for t in tops] or None,
                "text_offset": offsets}

    # -- the Renderer contract (server-sent events) ------------------------------------------

    def feed(self, out: RequestOutput) -> str:
        self._last = out
        if out.finish_reason == "error":
            return self.fail(ApiError(500, out.error or "generation failed"))
        self.done = out.finished
        chunk = self.chunk(out)
        if chunk is None:
            return ""
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def fail(self, error: ApiError) -> str:
        self.done = True
        self._last = None
        body = error_object(error)
        body["error"]["param"] = None
        return sse(body)

    def end(self) -> str:
        tail = ""
        if self.include_usage and self._last is not None and self._last.finished:
            tail = sse({**self.envelope(True), "choices": [], "usage": self.usage(self._last)})
        return tail + "data: [DONE]\n\n"

    def whole(self, outputs: Sequence[RequestOutput]) -> tuple[str, int]:
        failed = generation_failed(outputs)
        if failed is not None:
            raise failed
        return dumps(self.completion(outputs)), 200


class ChoicesRenderer:
    """Several prompts of one legacy completion (``prompt`` as a list): choice ``i`` answers
    prompt ``i``. The engine runs each prompt as its own request ``<request_id>-<i>``; their
    outputs arrive interleaved. Streamed chunks carry their choice's ``index``; the stream
    ends when every choice has finished. ``usage`` sums all prompts and completions."""

    def __init__(self, *, request_id: str, model: str, logprobs: bool, prefixes: Sequence[str],
                 stream: bool = False, include_usage: bool = False) -> None:
        self._choices = [OpenAiRenderer(chat=False, request_id=request_id, model=model, logprobs=logprobs,
                                        stream=stream, prefix=prefix) for prefix in prefixes]
        self._index = {sub_request_id(request_id, i): i for i in range(len(prefixes))}
        self.stream = stream
        self.include_usage = include_usage
        self.content_type = self._choices[0].content_type
        self.done = False
        self._last: dict[int, RequestOutput] = {}
        self._failed = False

    def _usage(self) -> dict[str, int]:
        usages = [OpenAiRenderer.usage(out) for out in self._last.values()]
        return {key: sum(u[key] for u in usages) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}

    def feed(self, out: RequestOutput) -> str:
        i = self._index[out.request_id]
        if out.finish_reason == "error":
            return self.fail(ApiError(500, out.error or "generation failed"))
        self._last[i] = out
        self.done = len(self._last) == len(self._choices) and all(o.finished for o in self._last.values())
        chunk = self._choices[i].chunk(out)
        if chunk is None:
            return ""
        chunk["choices"][0]["index"] = i
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def fail(self, error: ApiError) -> str:
        self.done, self._failed = True, True
        return self._choices[0].fail(error)

    def end(self) -> str:
        tail = ""
        if self.include_usage and not self._failed and len(self._last) == len(self._choices):
            tail = sse({**self._choices[0].envelope(True), "choices": [], "usage": self._usage()})
        return tail + "data: [DONE]\n\n"

    def whole(self, outputs: Sequence[RequestOutput]) -> tuple[str, int]:
        failed = generation_failed(outputs)
        if failed is not None:
            raise failed
        per_choice: list[list[RequestOutput]] = [[] for _ in self._choices]
        for out in outputs:
            per_choice[self._index[out.request_id]].append(out)
        choices = []
        for i, (renderer, outs) in enumerate(zip(self._choices, per_choice)):
            choice = renderer.choice(outs, renderer.prefix + "".join(o.text for o in outs), False)
            choices.append({**choice, "index": i})
            self._last[i] = outs[-1]
        return dumps({**self._choices[0].envelope(False), "choices": choices, "usage": self._usage()}), 200


def sub_request_id(request_id: str, index: int) -> str:
    """The engine request id of prompt ``index`` of a several-prompt completion."""
    return f"{request_id}-{index}"
