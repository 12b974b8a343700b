"""Serving options: the model's public name, chat template, access control and the memory budget.

These are the settings vLLM and TGI users pass on the command line
(``--served-model-name``, ``--chat-template``, ``--api-key``,
``--allowed-origins``); ``djl-serve`` maps its flags onto these same fields, so
a flag, an ``option.<key>`` line and an ``OPTION_<KEY>`` variable are three
spellings of one setting. Validators are pure: a chat-template file is read
when the tokenizer is loaded (``djl_python.config.chat_template``), the budget
is checked when the backend is built (``djl_python.backends.pytorch.memory``).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from typing import Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from djl_python.config.fields import Bool, OptNonNegativeInt, OptStr, PositiveInt, choice

ToolCallParser = Literal["hermes", "llama3_json"]
SchedulingPolicy = Literal["fcfs", "shortest_prompt_first"]  # engine/scheduler.py's, checked by a test

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(value: Any) -> Any:
    """Bytes as an integer, or a number with a unit: ``8G``/``8GB`` (10^9), ``8GiB`` (2^30)."""
    if isinstance(value, str):
        if not value.strip():
            return None
        match = _SIZE.match(value)
        if match is None:
            raise ValueError("must be a number of bytes, optionally with a unit: 512MiB, 8GiB, 8GB, 8G")
        number, unit, binary, _ = match.groups()
        base = 1024 if binary or unit == "" else 1000
        return int(float(number) * base ** _POWERS[unit.lower()])
    return value


def parse_origins(value: Any) -> Any:
    """``*``, ``a,b`` or a JSON list (vLLM's ``--allowed-origins '["a"]'``) -> list of origins."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError('must be a comma-separated list or a JSON list of origins, e.g. ["*"]') from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    return value


def _secret(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


class ServingProperties(BaseModel):
    """Options of the HTTP server and of the memory check. See docs/configuration.md."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    served_model_name: OptStr = Field(
        None,
        description="Name clients use (`model` in OpenAI, `{model}` in `/predictions/{model}`); unset: the "
        "`SERVING_LOAD_MODELS` name, else the model id or folder name.",
    )
    chat_template: OptStr = Field(
        None, description="Jinja chat template, or the path of a file holding one; replaces the tokenizer's."
    )
    enable_auto_tool_choice: Bool = Field(
        False,
        description="`tool_choice: \"auto\"` (the default when a chat request has `tools`): the model may call a "
        "tool, and `tool_call_parser` reads its calls from the text. Off: such requests get 400; "
        "`required` and a named function work either way (the grammar forces the call).",
    )
    tool_call_parser: choice(ToolCallParser, optional=True) = Field(  # type: ignore[valid-type]
        None,
        description="How the model writes tool calls, as vLLM names it: `hermes` (`<tool_call>{...}</tool_call>`, "
        "Hermes, Qwen) or `llama3_json` (`{\"name\": ..., \"parameters\": ...}`, Llama 3.1+). Needs "
        "`enable_auto_tool_choice`.",
    )
    api_key: Annotated[SecretStr | None, BeforeValidator(_secret)] = Field(
        None, description="djl-serve: require `Authorization: Bearer <key>` (401 otherwise); `/ping`, `/health`, `/version` exempt."
    )
    allowed_origins: Annotated[list[str] | None, BeforeValidator(parse_origins)] = Field(
        None, description="djl-serve: CORS origins allowed to call the server (`*`, a comma list or a JSON list)."
    )
    enable_prefix_caching: Bool = Field(
        True,
        description="PyTorch backend: keep prompts' KV cache (from the step their prefill completes) and "
        "finished requests' (prompt and output), and reuse it for a later prompt that starts with the same tokens "
        "(a shared system prompt, also among requests admitted in later steps of the same burst; the history of a "
        "chat), as vLLM does by default; greedy output is the same with or without it. Neuron: no effect.",
    )
    enable_chunked_prefill: Bool = Field(
        True,
        description="PyTorch backend: split a prompt across engine steps so that each step prefills at most "
        "`max_rolling_batch_prefill_tokens` tokens, as vLLM does by default; a long prompt then delays running "
        "streams by several short steps rather than one long one. Off: each prompt is prefilled in one step. "
        "Neuron: no effect (its compiled graphs prefill whole prompts).",
    )
    scheduling_policy: choice(SchedulingPolicy) = Field(  # type: ignore[valid-type]
        "shortest_prompt_first",
        description="The order waiting requests are admitted in. `shortest_prompt_first`: fewest prompt tokens "
        "to compute first (less what the prefix cache held when the request arrived; on Neuron, by padded bucket; "
        "ties in arrival order), which lowers the mean and median time to first token when requests queue; no "
        "request is overtaken by more later ones than there are slots (`max_rolling_batch_size`), so none starves. "
        "`fcfs`: arrival order, as DJL, TGI and vLLM do by default.",
    )
    prefix_cache_rows: OptNonNegativeInt = Field(
        None,
        description="KV rows the prefix cache keeps (each holds one cached prompt or conversation, up to "
        "`n_positions` tokens); unset: one per slot, fewer where the memory budget leaves less room; 0: none.",
    )
    memory_budget: Annotated[int | None, BeforeValidator(parse_size), Field(ge=1)] = Field(
        None,
        description="Bytes (or `8GiB`, `8GB`) that weights + KV cache may take, checked before loading "
        "(PyTorch backend); unset: 90% of available memory (host RAM within the cgroup limit, or free GPU memory).",
    )
    max_request_bytes: Annotated[int | None, BeforeValidator(parse_size), Field(ge=1)] = Field(
        None,
        description="djl-serve: largest request body in bytes (or `8MiB`); larger bodies get 413 before any "
        "parsing. Unset: max(4 MiB, 256 bytes x `n_positions`).",
    )
    max_unsent_tokens: PositiveInt = Field(
        512,
        description="djl-serve: a streaming client that stops reading is aborted (its slot freed) once this many "
        "generated tokens wait unsent beyond the connection's buffers (16 KiB in the transport and a 16 KiB "
        "send buffer per stream, plus what the client's own kernel holds).",
    )
    stream_stall_timeout: PositiveInt = Field(
        30,
        description="djl-serve: seconds a stream's writes may stay blocked (its client acknowledges nothing: the "
        "buffers above are full) before the stream is aborted and its slot freed.",
    )
    max_connections: PositiveInt = Field(
        8192,
        description="djl-serve: open HTTP connections; past it a new connection gets 503 at once. Lowered, with a "
        "warning, to stay 256 under the open-file limit (raised to the hard limit at start).",
    )
    header_timeout: PositiveInt = Field(
        10,
        description="djl-serve: seconds a connection may take to send a request's whole header (from its start "
        "or from the previous response); past it the client gets 408 and the connection is closed.",
    )
    body_timeout: PositiveInt = Field(
        30,
        description="djl-serve: seconds without a byte while a request body is read; past it the connection is "
        "closed.",
    )


    @model_validator(mode="after")
    def _tool_parser_for_auto(self) -> "ServingProperties":
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise ValueError("enable_auto_tool_choice needs tool_call_parser (hermes or llama3_json): the model's tool "
                             "calls must be read from its text")
        return self


MIN_REQUEST_BYTES = 4 * 1024 * 1024  # the default's floor: chat bodies carry history and JSON escapes
REQUEST_BYTES_PER_POSITION = 256  # a token is rarely over 16 characters, <= 6 bytes each as a JSON escape


def default_max_request_bytes(n_positions: int | None) -> int:
    """``max_request_bytes`` when unset: room for a prompt of ``n_positions`` tokens written in the
    most expensive JSON (``\\uXXXX`` escapes), with a 4 MiB floor."""
    return max(MIN_REQUEST_BYTES, REQUEST_BYTES_PER_POSITION * (n_positions or 0))
