"""Text Generation Inference request bodies (``/generate``, ``/generate_stream``, ``/``).

Field names and meanings are TGI's. Like TGI, any sampling warper
(``temperature`` other than 1, ``top_k``, ``top_p``, ``typical_p``) turns
sampling on even when ``do_sample`` is false. Options we do not implement are
accepted only at their neutral value (``best_of`` 1, ``watermark`` false,
``grammar`` null, ``adapter_id`` null); unknown fields are rejected.
"""

from __future__ import annotations

import random
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from djl_python.engine.request import InvalidRequest, SamplingParams

TGI_DEFAULT_MAX_NEW_TOKENS = 100


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TgiParameters(_Body):
    do_sample: bool = False
    max_new_tokens: Optional[int] = None
    repetition_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    return_full_text: Optional[bool] = False
    stop: list[str] = Field(default_factory=list)
    seed: Optional[int] = None
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    truncate: Optional[int] = None
    typical_p: Optional[float] = None
    best_of: Optional[int] = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    top_n_tokens: Optional[int] = None
    grammar: Optional[dict[str, Any]] = None
    adapter_id: Optional[str] = None

    @property
    def sampling(self) -> bool:
        warpers = (self.temperature not in (None, 1.0)) or any(
            v is not None for v in (self.top_k, self.top_p, self.typical_p)
        )
        return self.do_sample or warpers


class TgiRequest(_Body):
    inputs: str
    parameters: TgiParameters = Field(default_factory=TgiParameters)
    stream: bool = False

    def sampling_params(self) -> SamplingParams:
        """Validated ``SamplingParams``; a sampling request without a seed gets a random
        one so that ``details.seed`` can report it (as TGI does)."""
        p = self.parameters
        if not self.inputs:
            raise InvalidRequest("inputs", "must not be empty")
        for name, neutral in (("best_of", (None, 1)), ("watermark", (False,)), ("grammar", (None,)),
                              ("adapter_id", (None,))):
            if getattr(p, name) not in neutral:
                raise InvalidRequest(f"parameters.{name}", f"{name} is not supported")
        if p.max_new_tokens is not None and p.max_new_tokens <= 0:
            raise InvalidRequest("parameters.max_new_tokens", f"must be a positive integer, got {p.max_new_tokens}")
        if p.truncate is not None and p.truncate <= 0:
            raise InvalidRequest("parameters.truncate", f"must be a positive integer, got {p.truncate}")
        sampling = p.sampling
        seed = p.seed if p.seed is not None or not sampling else random.getrandbits(63)
        try:
            return SamplingParams(
                max_new_tokens=p.max_new_tokens or TGI_DEFAULT_MAX_NEW_TOKENS,
                do_sample=sampling,
                temperature=p.temperature,
                top_k=p.top_k,
                top_p=p.top_p,
                typical_p=p.typical_p,
                repetition_penalty=p.repetition_penalty,
                frequency_penalty=p.frequency_penalty or 0.0,
                seed=seed,
                stop=tuple(p.stop),
                logprobs=True,  # every TGI token carries its logprob
                top_logprobs=p.top_n_tokens or 0,
            )
        except InvalidRequest as err:
            raise InvalidRequest(f"parameters.{'top_n_tokens' if err.field == 'top_logprobs' else err.field}",
                                 err.message) from None
