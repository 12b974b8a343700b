"""LMI response rendering: engine ``RequestOutput``s -> the strings sent to the client.

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
  the end) / ``chat.completion.chunk`` lines, the last with ``usage``, built by
  ``djl_python.api.openai_render`` (the one OpenAI builder);
* ``none``: the raw text deltas.

Token texts: the engine reports a text delta per step (incomplete characters
and possible stop-sequence prefixes held back), so a step's delta is given to
the step's last token and its other tokens get "". Concatenating token texts
therefore always equals ``generated_text``. Top-token texts come from the
engine (``RequestOutput.top_logprob_texts``) and prompt-token texts from the
prompt builder. Pure: no model, no I/O. ``ResponseFormatter`` keeps the
``Renderer`` contract of ``djl_python.api.render``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from djl_python.api import finish, tgi
from djl_python.api.errors import ApiError
from djl_python.api.lmi import CONTENT_TYPES, LmiRequest
from djl_python.api.openai_render import OpenAiRenderer
from djl_python.api.prompt import EngineRequest, PromptBuilder
from djl_python.api.render import dumps
from djl_python.engine.request import FinishReason, RequestOutput


def _dumps(value: Any) -> str:
    return dumps(value)  # strict JSON (no NaN), as every renderer


class ResponseFormatter:
    """Formats one request's outputs in its LMI output format.

    Contract: call ``format`` for each ``RequestOutput`` in order, then stop
    after the one with ``finished``; or call ``error`` once to end the request
    with ``finish_reason="error"``. ``done`` is True after either. An output
    with ``finish_reason == "error"`` is formatted as ``error(output.error)``.
    """

    def __init__(
        self,
        request: LmiRequest,
        *,
        request_id: str,
        prompt_text: str = "",
        prompt_token_ids: Sequence[int] = (),
        prompt_token_texts: Sequence[str] = (),
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
        self.prompt_token_texts = list(prompt_token_texts)
        self._special = special_token_ids
        self.stream = request.stream
        self.model = request.model or model_name
        self._chat = OpenAiRenderer(chat=True, request_id=request_id, model=self.model,
                                    logprobs=request.params.logprobs, created=created, tools=request.tools)
        self._outputs: list[RequestOutput] = []
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
        self._outputs.append(out)
        new = self._add_tokens(out)
        self.text += out.text
        self.done = out.finished
        return getattr(self, f"_{self.kind}")(new, out.text, out.finish_reason if out.finished else None)

    def error(self, message: str, out: Optional[RequestOutput] = None) -> str:
        """Final fragment for a request that failed (after ``out``'s tokens, if any)."""
        if self.done:
            raise RuntimeError(f"request {self.request_id} already finished")
        new = self._add_tokens(out) if out is not None else []
        if out is not None:
            self._outputs.append(out)
        else:  # the chat shapes end with a final chunk of their own
            last = self._outputs[-1] if self._outputs else None
            self._outputs.append(RequestOutput(
                self.request_id, [], "", finished=True, finish_reason=FinishReason.ERROR,
                prompt_tokens=last.prompt_tokens if last else len(self.prompt_token_ids),
                generated_tokens=last.generated_tokens if last else 0))
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
            return tgi.token_object(token_id, text, logprob, special)
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
                names = out.top_logprob_texts[i]
                tok["_top"] = [self._token(t, names[t], v) for t, v in out.top_logprobs[i].items()]
            new.append(tok)
        if not new and out.text:
            # Held-back text flushed by a final output without a token: keep it visible per token.
            new.append(self._token(-1, out.text, None))
        self.tokens.extend(new)
        return new

    @staticmethod
    def _public(tok: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in tok.items() if k != "_top"}

    def _finish_reason(self, reason: str) -> str:
        return finish.tgi(reason) if self.request.tgi_compat else reason

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
                [{"id": t, "text": x, "logprob" if req.tgi_compat else "log_prob": None}
                 for t, x in zip(self.prompt_token_ids, self.prompt_token_texts)]
                if req.decoder_input_details else []
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

    def _json_chat(self, new: list, delta: str, reason: Optional[str]) -> str:
        if reason is None:
            return ""
        body = self._chat.completion(self._outputs)
        if reason == "error":
            body["choices"][0]["finish_reason"] = "error"
            body["error"] = {"message": self._error, "code": 500}
        return _dumps(body)

    def _jsonlines_chat(self, new: list, delta: str, reason: Optional[str]) -> str:
        out = self._outputs[-1]
        chunk = self._chat.chunk(out)
        if chunk is None:
            return ""
        if reason is not None:
            # The chunk's own reason where it has one ("tool_calls"); an error ends it in any case.
            choice = chunk["choices"][0]
            choice["finish_reason"] = choice["finish_reason"] or finish.openai(reason)  # type: ignore[arg-type]
            chunk["usage"] = self._chat.usage(out)
            if reason == "error":
                chunk["error"] = {"message": self._error, "code": 500}
        return _dumps(chunk) + "\n"

    # -- the Renderer contract (djl_python.api.render) -----------------------------------

    def feed(self, out: RequestOutput) -> str:
        return self.format(out)

    def fail(self, error: ApiError) -> str:
        return self.error(error.message)

    def end(self) -> str:
        return ""

    def whole(self, outputs: Sequence[RequestOutput]) -> tuple[str, int]:
        body = "".join(self.format(out) for out in outputs)
        return body, 500 if outputs[-1].finish_reason == "error" else 200


def make_formatter(request: LmiRequest, *, request_id: str, prompt_text: str = "",
                   prompt_token_ids: Sequence[int] = (), prompt_token_texts: Sequence[str] = (),
                   special_token_ids: frozenset[int] = frozenset(), created: Optional[int] = None,
                   model_name: str = "") -> ResponseFormatter:
    """The formatter for ``request``'s output format (see ``ResponseFormatter``).

    ``prompt_text`` is what ``details.inputs`` and ``return_full_text`` show (the
    rendered prompt for chat); ``prompt_token_ids`` and ``prompt_token_texts``
    feed ``decoder_input_details``; ``special_token_ids`` mark ``special``;
    ``model_name`` is the chat ``model`` when the request names none.
    """
    return ResponseFormatter(request, request_id=request_id, prompt_text=prompt_text,
                             prompt_token_ids=prompt_token_ids, prompt_token_texts=prompt_token_texts,
                             special_token_ids=special_token_ids, created=created, model_name=model_name)


def lmi_renderer(request: LmiRequest, engine_request: EngineRequest, prompts: PromptBuilder, *, request_id: str,
                 model_name: str = "", created: Optional[int] = None) -> ResponseFormatter:
    """The renderer of one translated LMI request (prompt-token texts only when asked for)."""
    ids = engine_request.prompt_ids
    return make_formatter(
        request, request_id=request_id, prompt_text=engine_request.prompt_text, prompt_token_ids=ids,
        prompt_token_texts=prompts.token_texts(ids) if request.decoder_input_details else (),
        special_token_ids=prompts.special_ids, created=created, model_name=model_name,
    )
