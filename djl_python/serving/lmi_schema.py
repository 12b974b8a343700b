"""Pydantic schemas of the two LMI request bodies (strict: no silent type coercion).

Only shapes and types live here; value ranges are checked once, by
``SamplingParams``, and the cross-field rules by ``djl_python.serving.lmi``.
Extra keys are allowed and kept in ``model_extra`` so the parser can report
what it ignored (DJL ignores unknown parameters too).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

OutputFormatter = Literal["json", "jsonlines", "sse", "json_chat", "jsonlines_chat", "none"]
StopSpec = Optional[Union[str, list[str]]]


class _Strict(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; extra keys are kept so we can report them.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class LmiParameters(_Strict):
    """The ``parameters`` object of an LMI request (names as in DJL LMI)."""

    max_new_tokens: Optional[int] = None
    do_sample: Optional[bool] = None
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    typical_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None
    ignore_eos: bool = False
    stop: StopSpec = None
    stop_sequences: StopSpec = None
    stop_token_ids: Optional[list[int]] = None
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False
    logprobs: Optional[Union[bool, int]] = None
    top_n_tokens: int = Field(default=0, ge=0, le=20)
    output_formatter: Optional[OutputFormatter] = None
    # Accepted only at their neutral value: we decode one sequence per request.
    n: int = 1
    best_of: Optional[int] = None
    num_beams: int = 1


class LmiBody(_Strict):
    inputs: Union[str, list[str]]
    parameters: LmiParameters = LmiParameters()
    stream: bool = False


class ChatMessage(_Strict):
    role: str
    content: Union[str, list[dict[str, Any]], None] = None
    name: Optional[str] = None


class ChatBody(_Strict):
    """OpenAI chat-completions fields we honour; others are ignored."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: Optional[str] = None
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: float = 1.0
    top_p: Optional[float] = None
    n: int = 1
    stream: bool = False
    stop: StopSpec = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)
    seed: Optional[int] = None
    ignore_eos: bool = False
    output_formatter: Optional[OutputFormatter] = None
