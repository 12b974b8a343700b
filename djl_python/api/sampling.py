"""Request -> ``SamplingParams``, the same way for every API: the knob fields of each schema and
the one resolution order.

Each API's ``to_sampling_params`` collects the knobs its request set, and calls
:func:`sampling_params` with the model's generation defaults and its own API defaults;
:func:`djl_python.engine.knobs.resolve_knobs` applies request > model > API default to
every knob. The schemas' knob fields come from :func:`with_knob_fields`, so a knob
declared on ``SamplingParams`` is a field of every API's body. Errors name the user's
field path (``prefix`` plus the API's name for the engine's field).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, TypeVar

from pydantic import BaseModel, Field, create_model

from djl_python.engine.knobs import resolve_knobs, sampling_knobs
from djl_python.engine.request import InvalidRequest, SamplingParams

M = TypeVar("M", bound=BaseModel)


def with_knob_fields(name: str, base: type[M]) -> type[M]:
    """A pydantic model ``name`` deriving from ``base`` with one optional field per sampling knob."""
    fields: dict[str, Any] = {k.name: (Optional[k.kind], Field(None, description=k.description))
                              for k in sampling_knobs()}
    return create_model(name, __base__=base, **fields)  # type: ignore[call-overload, no-any-return]


def requested_knobs(body: BaseModel) -> dict[str, Any]:
    """The knob values ``body`` carries (``None`` where the request left one unset)."""
    return {k.name: getattr(body, k.name) for k in sampling_knobs()}


def sampling_params(
    request: Mapping[str, Any],
    model_defaults: Mapping[str, Any],
    *,
    api_defaults: Mapping[str, Any] = {},  # noqa: B006 - read only
    do_sample: Callable[[Mapping[str, Any]], bool] | bool,
    prefix: str = "",
    names: Mapping[str, str] = {},  # noqa: B006 - read only
    **fixed: Any,
) -> SamplingParams:
    """``SamplingParams`` from the request's knobs (``request``), the model's generation defaults
    and the API's defaults, in that order, plus the API's ``fixed`` fields. ``do_sample`` is a
    bool or a rule over the resolved knobs (OpenAI samples when the resolved temperature is
    above 0). An ``InvalidRequest`` is renamed to ``prefix`` + the API's field name."""
    knobs = resolve_knobs(request, model_defaults, api_defaults)
    sample = do_sample(knobs) if callable(do_sample) else do_sample
    try:
        return SamplingParams(**knobs, do_sample=sample, **fixed)
    except InvalidRequest as err:
        raise InvalidRequest(prefix + names.get(err.field, err.field), err.message) from None
