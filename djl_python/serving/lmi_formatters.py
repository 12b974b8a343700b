"""LMI response formatting: engine ``RequestOutput``s -> the strings sent to the client.

One ``ResponseFormatter`` per request, fed every ``RequestOutput`` of that
request in order (``format``) or ended by a failure (``error``). Each call
returns the next fragment ("" when there is nothing to send yet); the
concatenation of all fragments is the response body:

* ``json``: ``{"generated_text": ..., "details"?: {...}}`` streamed as fragments
  (``[...]`` around it with ``tgi_compat``);
* ``jsonlines``: one ``{"token": {...}}`` line per token; the last line adds
  ``generated_text`` and, with details or on error, ``details``;
* ``sse``: the jsonlines lines as ``data: <line>\\n\\n`` events;
* ``json_chat`` / ``jsonlines_chat``: OpenAI ``chat.completion`` (sent whole at
  the end) / ``chat.completion.chunk`` lines, each with ``usage`` at the end;
* ``none``: the raw text deltas.

Token texts: the engine reports a text delta per step (incomplete characters
and possible stop-sequence prefixes held back), so a step's delta is given to
the step's last token and its other tokens get "". Concatenating token texts
therefore always equals ``generated_text``. Pure: no model, no I/O.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from djl_python.engine.request import OPENAI_FINISH_REASONS, TGI_FINISH_REASONS, RequestOutput

if TYPE_CHECKING:  # lmi.py imports this module; the dependency is for annotations only
    from djl_python.serving.lmi import LmiRequest

CONTENT_TYPES = {
    "json": "application/json",
    "jsonlines": "application/jsonlines",
    "sse": "text/event-stream",
    "json_chat": "application/json",
    "jsonlines_chat": "application/jsonlines",
    "none": "text/plain",
}
OUTPUT_FORMATTERS = frozenset(CONTENT_TYPES)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class ResponseFormatter:
    """Formats one request's outputs in its LMI output format.

    Contract: call ``format`` for each ``RequestOutput`` in order, then stop
    after the one with ``finished``; or call ``error`` once to end the request
    with ``finish_reason="error"``. ``done`` is True after either. An output
    with ``finish_reason == "error"`` is formatted as ``error(output.error)``.
    """

    def __init__(
        self,
        request: "LmiRequest",
        *,
        request_id: str,
        prompt_text: str = "",
        prompt_token_ids: Sequence[int] = (),
        decode_token: Optional[Callable[[int], str]] = None,
        special_token_ids: frozenset[int] = frozenset(),
        created: Optional[int] = None,
        model_name: str = "",
    ) -> None:
        self.request = request
        self.kind = request.output_formatter
        self.content_type = CONTENT_TYPES[self.kind]
        self.request_id = request_id
        self.prompt_text = prompt_text
        self.prompt_token_ids = list(prompt_token_ids)
        self._decode = decode_token
        self._special = special_token_ids
        self._created = int(time.time()) if created is None else created
        self.model = request.model or model_name
        self.tokens: list[dict[str, Any]] = []
        self.text = ""
        self.done = False
        self._started = False
        self._error = ""

    # -- public -------------------------------------------------------------------------

    def format(self, out: RequestOutput) -> str:
        if self.done:
            raise RuntimeError(f"request {self.request_id} already finished")
        if out.finished and out.finish_reason == "error":
            return self.error(out.error or "generation failed", out)
        new = self._add_tokens(out)
        self.text += out.text
        self.done = out.finished
        return getattr(self, f"_{self.kind}")(new, out.text, out.finish_reason if out.finished else None)

    def error(self, message: str, out: Optional[RequestOutput] = None) -> str:
        """Final fragment for a request that failed (after ``out``'s tokens, if any)."""
        if self.done:
            raise RuntimeError(f"request {self.request_id} already finished")
        new = self._add_tokens(out) if out is not None else []
        delta = out.text if out is not None else ""
        self.text += delta
        self.done = True
        self._error = message
        if not new and self.kind in ("jsonlines", "sse"):
            new = [self._token(-1, "", None)]
        return getattr(self, f"_{self.kind}")(new, delta, "error")

    # -- tokens and details -------------------------------------------------------------

    def _token(self, token_id: int, text: str, logprob: Optional[float]) -> dict[str, Any]:
        special = token_id in self._special
        if self.request.tgi_compat:
            return {"id": token_id, "text": text, "logprob": logprob, "special": special}
        tok: dict[str, Any] = {"id": token_id, "text": text, "log_prob": logprob}
        if special:
            tok["special_token"] = True
        return tok

    def _add_tokens(self, out: RequestOutput) -> list[dict[str, Any]]:
        new = []
        n = len(out.token_ids)
        for i, tid in enumerate(out.token_ids):
            lp = out.logprobs[i] if i < len(out.logprobs) else None
            tok = self._token(tid, out.text if i == n - 1 else "", lp)
            if self.request.top_n_tokens and i < len(out.top_logprobs):
                tok["_top"] = [self._token(t, self._text_of(t), v) for t, v in out.top_logprobs[i].items()]
            new.append(tok)
        if not new and out.text:
            # Held-back text flushed by a final output without a token: keep it visible per token.
            new.append(self._token(-1, out.text, None))
        self.tokens.extend(new)
        return new

    def _text_of(self, token_id: int) -> str:
        return self._decode(token_id) if self._decode is not None else ""

    @staticmethod
    def _public(tok: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in tok.items() if k != "_top"}

    def _finish_reason(self, reason: str) -> str:
        return TGI_FINISH_REASONS.get(reason, reason) if self.request.tgi_compat else reason

    def _details(self, reason: str, *, with_tokens: bool) -> Optional[dict[str, Any]]:
        req = self.request
        if not req.details and reason != "error":
            return None
        d: dict[str, Any] = {"finish_reason": self._finish_reason(reason)}
        if reason == "error":
            d["finish_reason"] = "error"
            d["error"] = self._error
        d["generated_tokens"] = sum(1 for t in self.tokens if t["id"] >= 0)
        d["inputs"] = self.prompt_text
        if req.tgi_compat:
            d["seed"] = req.params.seed
        if with_tokens:
            d["tokens"] = [self._public(t) for t in self.tokens]
        if req.decoder_input_details or (req.tgi_compat and with_tokens):
            d["prefill"] = (
                [{"id": t, "text": self._text_of(t), "logprob" if req.tgi_compat else "log_prob": None}
                 for t in self.prompt_token_ids] if req.decoder_input_details else []
            )
        if req.top_n_tokens and with_tokens:
            d["top_tokens"] = [[self._public(x) for x in t.get("_top", [])] for t in self.tokens]
        return d

    def _generated_text(self) -> str:
        return (self.prompt_text if self.request.return_full_text else "") + self.text

    # -- formats --------------------------------------------------------------------------

    def _json(self, new: list, delta: str, reason: Optional[str]) -> str:
        parts = []
        if not self._started:
            self._started = True
            prefix = self.prompt_text if self.request.return_full_text else ""
            parts.append(("[" if self.request.tgi_compat else "") + '{"generated_text": "' + _dumps(prefix)[1:-1])
        parts.append(_dumps(delta)[1:-1])
        if reason is not None:
            details = self._details(reason, with_tokens=True)
            parts.append('"' + (f', "details": {_dumps(details)}' if details is not None else "") + "}")
            if self.request.tgi_compat:
                parts.append("]")
        return "".join(parts)

    def _lines(self, new: list, reason: Optional[str]) -> list[str]:
        lines = []
        for i, tok in enumerate(new):
            line: dict[str, Any] = {"token": self._public(tok)}
            if "_top" in tok:
                line["top_tokens"] = [self._public(x) for x in tok["_top"]]
            if reason is not None and i == len(new) - 1:
                line["generated_text"] = self._generated_text()
                details = self._details(reason, with_tokens=False)
                if details is not None:
                    line["details"] = details
            lines.append(_dumps(line))
        if reason is not None and not new:
            # A final output without a token (abort): close the stream with the summary alone.
            line = {"token": self._token(-1, "", None), "generated_text": self._generated_text()}
            details = self._details(reason, with_tokens=False)
            if details is not None:
                line["details"] = details
            lines.append(_dumps(line))
        return lines

    def _jsonlines(self, new: list, delta: str, reason: Optional[str]) -> str:
        return "".join(line + "\n" for line in self._lines(new, reason))

    def _sse(self, new: list, delta: str, reason: Optional[str]) -> str:
        return "".join(f"data: {line}\n\n" for line in self._lines(new, reason))

    def _none(self, new: list, delta: str, reason: Optional[str]) -> str:
        return delta

    def _usage(self) -> dict[str, int]:
        completion = sum(1 for t in self.tokens if t["id"] >= 0)
        prompt = len(self.prompt_token_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _chat_logprobs(self, tokens: list) -> Optional[dict[str, Any]]:
        if not self.request.params.logprobs:
            return None

        def entry(t: dict[str, Any]) -> dict[str, Any]:  # chat requests never use the TGI token shape
            return {"token": t["text"], "logprob": t["log_prob"], "bytes": list(t["text"].encode("utf-8"))}

        return {"content": [{**entry(t), "top_logprobs": [entry(x) for x in t.get("_top", [])]} for t in tokens]}

    def _openai_reason(self, reason: str) -> str:
        return OPENAI_FINISH_REASONS.get(reason, reason)

    def _json_chat(self, new: list, delta: str, reason: Optional[str]) -> str:
        if reason is None:
            return ""
        body: dict[str, Any] = {
            "id": f"chatcmpl-{self.request_id}",
            "object": "chat.completion",
            "created": self._created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.text},
                "logprobs": self._chat_logprobs(self.tokens),
                "finish_reason": self._openai_reason(reason),
            }],
            "usage": self._usage(),
        }
        if reason == "error":
            body["error"] = {"message": self._error, "code": 500}
        return _dumps(body)

    def _jsonlines_chat(self, new: list, delta: str, reason: Optional[str]) -> str:
        if not new and not delta and reason is None:
            return ""
        d: dict[str, Any] = {"content": delta}
        if not self._started:
            self._started = True
            d["role"] = "assistant"
        chunk: dict[str, Any] = {
            "id": f"chatcmpl-{self.request_id}",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": d,
                "logprobs": self._chat_logprobs([t for t in new if t["id"] >= 0]),
                "finish_reason": self._openai_reason(reason) if reason is not None else None,
            }],
        }
        if reason is not None:
            chunk["usage"] = self._usage()
            if reason == "error":
                chunk["error"] = {"message": self._error, "code": 500}
        return _dumps(chunk) + "\n"


def make_formatter(request: "LmiRequest", *, request_id: str, prompt_text: str = "",
                   prompt_token_ids: Sequence[int] = (), decode_token: Optional[Callable[[int], str]] = None,
                   special_token_ids: frozenset[int] = frozenset(), created: Optional[int] = None,
                   model_name: str = "") -> ResponseFormatter:
    """The formatter for ``request``'s output format (see ``ResponseFormatter``).

    ``prompt_text`` is what ``details.inputs`` and ``return_full_text`` show (the
    rendered prompt for chat); ``prompt_token_ids`` feed ``usage`` and
    ``decoder_input_details``; ``decode_token`` names top/prefill tokens;
    ``special_token_ids`` mark ``special``; ``model_name`` is the chat ``model``
    when the request names none.
    """
    return ResponseFormatter(request, request_id=request_id, prompt_text=prompt_text,
                             prompt_token_ids=prompt_token_ids, decode_token=decode_token,
                             special_token_ids=special_token_ids, created=created, model_name=model_name)
