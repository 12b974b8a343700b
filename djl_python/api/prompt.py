"""The one prompt builder: text, token ids or chat messages -> the engine's prompt ids.

Built once per loaded model from its tokenizer (at load time, by the
transport); afterwards neither the transports nor the renderers touch the
tokenizer. Per-token texts of generated tokens come from the engine
(``RequestOutput.token_texts``); the builder only names prompt tokens
(``details.prefill``) and knows the special ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

from djl_python.api.chat import ChatMessage, flatten, render_chat
from djl_python.engine.request import InvalidRequest, SamplingParams


@dataclass(frozen=True)
class EngineRequest:
    """One API request translated for the engine: what ``Engine.add_request`` takes,
    plus the prompt text that renderers may echo (``details.inputs``, ``return_full_text``)."""

    prompt_text: str
    prompt_ids: list[int]
    params: SamplingParams
    # What every API calls this prompt in its errors: "messages" for a chat body on any route;
    # "prompt" (the engine's word, which each route renames: inputs, prompt) otherwise.
    prompt_field: str = "prompt"


class ToolOptions(Protocol):
    """The server options tool calling reads (``HandlerConfig`` has them)."""

    enable_auto_tool_choice: bool
    tool_call_parser: Optional[str]


def auto_tool_parser(config: ToolOptions) -> Optional[str]:
    """The parser ``tool_choice: auto`` reads calls with: ``tool_call_parser`` when
    ``enable_auto_tool_choice`` is on, else None (auto is then refused)."""
    return config.tool_call_parser if config.enable_auto_tool_choice else None


def max_token_chars(tokenizer: Any) -> Optional[int]:
    """The most characters one token can stand for: the longest vocabulary entry (added tokens
    included). Byte-level BPE spells each byte as one character and SentencePiece's byte tokens
    are ``<0xNN>``, so an entry is never shorter than the text it encodes. ``None`` when the
    tokenizer does not expose its vocabulary (no bound is then applied)."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        return None
    try:
        return max((len(token) for token in get_vocab()), default=None)
    except Exception:  # noqa: BLE001 - a tokenizer without a usable vocabulary: no bound
        return None


class PromptBuilder:
    """Turns prompts into token ids with one tokenizer.

    With ``max_prompt_tokens``, a prompt with more characters than that many tokens can hold
    (``max_prompt_tokens x max_token_chars``) is refused before tokenising: tokenising megabytes
    takes seconds, and such a prompt is certainly too long (tokenizers whose normaliser deletes
    characters aside). Shorter prompts are tokenised and the engine checks their token count.
    """

    def __init__(self, tokenizer: Any, max_prompt_tokens: Optional[int] = None,
                 model_defaults: Mapping[str, Any] | None = None, tool_parser: Optional[str] = None) -> None:
        self._tokenizer = tokenizer
        # The server's tool_call_parser when enable_auto_tool_choice is on (``tool_choice: auto``), else None.
        self.tool_parser = tool_parser
        # The model's generation_config knobs (``Engine.defaults``): every API's to_sampling_params reads them.
        self.model_defaults: Mapping[str, Any] = model_defaults if model_defaults is not None else {}
        self.special_ids: frozenset[int] = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
        per_token = max_token_chars(tokenizer) if max_prompt_tokens else None
        self.max_prompt_tokens = max_prompt_tokens
        self.max_prompt_chars: Optional[int] = max_prompt_tokens * per_token if max_prompt_tokens and per_token else None

    def check_length(self, chars: int, field: str = "prompt") -> None:
        """``InvalidRequest(field)`` when ``chars`` characters cannot fit in ``max_prompt_tokens``."""
        if self.max_prompt_chars is not None and chars > self.max_prompt_chars:
            raise InvalidRequest(
                field, f"the prompt has {chars} characters; at most {self.max_prompt_chars} characters can fit "
                f"in {self.max_prompt_tokens} tokens (n_positions), so it is too long")

    def text(self, prompt: str) -> list[int]:
        """A plain prompt, with the tokenizer's special tokens (BOS where the model has one)."""
        self.check_length(len(prompt))
        return list(self._tokenizer.encode(prompt))

    def chat(self, messages: Sequence[ChatMessage],
             tools: Optional[list[dict[str, Any]]] = None) -> tuple[str, list[int]]:
        """The chat template's prompt and its ids; no extra special tokens: the template wrote them.
        ``tools`` (OpenAI tool objects) are passed to the template, which may render them."""
        # The rendered prompt holds every message's content and name, and at least one token per
        # message: bound them before templating.
        if self.max_prompt_tokens and len(messages) > self.max_prompt_tokens:
            raise InvalidRequest("messages", f"{len(messages)} messages cannot fit in {self.max_prompt_tokens} "
                                 "tokens (n_positions): each takes at least one")
        self.check_length(sum(len(m["content"]) + len(m.get("name", "")) for m in flatten(messages)), "messages")
        text = render_chat(self._tokenizer, list(messages), tools=tools)
        self.check_length(len(text), "messages")
        return text, list(self._tokenizer.encode(text, add_special_tokens=False))

    def build(self, prompt: Union[str, list[int], Sequence[ChatMessage]], params: SamplingParams,
              *, truncate: int | None = None, tools: Optional[list[dict[str, Any]]] = None) -> EngineRequest:
        """One ``EngineRequest``: a string, token ids (OpenAI completions) or chat messages (with the
        request's ``tools`` for the template). ``truncate`` keeps only the last ``truncate`` prompt tokens (TGI)."""
        if isinstance(prompt, str):
            text, ids = prompt, self.text(prompt)
        elif prompt and all(isinstance(m, ChatMessage) for m in prompt):
            text, ids = self.chat(prompt, tools)  # type: ignore[arg-type]
            return EngineRequest(text, ids[-truncate:] if truncate is not None else ids, params, "messages")
        elif all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            text, ids = "", list(prompt)  # type: ignore[arg-type]
        else:
            raise InvalidRequest("prompt", "expected a string, token ids or chat messages")
        if truncate is not None:
            ids = ids[-truncate:]
        return EngineRequest(text, ids, params)

    def full_text(self, prompt_ids: Sequence[int], text: str, token_ids: Sequence[int]) -> str:
        """Prompt and generation decoded together, as DJL's static path decodes ``generate()``'s
        output (prompt and new tokens in one sequence, so a word split across them reads whole).

        No prompt ids (chat) return the generation alone. A stop-sequence cut (``text``
        shorter than its tokens' text) keeps the cut after the decoded prompt.
        """
        if not prompt_ids:
            return text
        if self._tokenizer.decode(list(token_ids), skip_special_tokens=True) != text:
            return self._tokenizer.decode(list(prompt_ids), skip_special_tokens=True) + text
        return self._tokenizer.decode(list(prompt_ids) + list(token_ids), skip_special_tokens=True)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to text (OpenAI ``echo`` of a token-id prompt)."""
        try:
            return self._tokenizer.decode(list(ids))
        except Exception as err:  # noqa: BLE001 - e.g. a negative id: OverflowError in tokenizers
            raise InvalidRequest("prompt", f"token ids cannot be decoded: {err}") from None

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each prompt token's text on its own (``details.prefill``)."""
        return [self._tokenizer.decode([t]) for t in ids]
