"""Sampling knobs: the one list, read from ``SamplingParams``, and the one order that fills them.

A *knob* is a ``SamplingParams`` field declared with :func:`djl_python.engine.request.knob`.
Every API accepts each knob under its field name (``djl_python.api.sampling`` derives the
schemas from :func:`sampling_knobs`), a model's ``generation_config.json`` may default it
(:class:`djl_python.engine.generation_defaults.GenerationDefaults`), and DJL's string bodies
coerce it by its type. Adding a field with ``knob(...)`` is all it takes for a new knob to
reach every API; the sampler must of course apply it.

:func:`resolve_knobs` is vLLM's order (``to_sampling_params`` in vllm/entrypoints/openai,
with the model's ``generation_config`` as ``default_sampling_params``): the request's value,
else the model's default, else the API's default, else ``None`` (the neutral value).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from djl_python.engine.request import SamplingParams


@dataclass(frozen=True)
class Knob:
    """One sampling knob: its field name, its value type (``int`` or ``float``) and what it does."""

    name: str
    kind: type
    description: str


def sampling_knobs() -> tuple[Knob, ...]:
    """The knobs ``SamplingParams`` declares, in field order."""
    return knobs_of(SamplingParams)


@functools.lru_cache(maxsize=None)
def knobs_of(params_type: type) -> tuple[Knob, ...]:
    """The knobs a ``SamplingParams``-like dataclass declares with ``knob(...)``, in field order."""
    hints = typing.get_type_hints(params_type)
    knobs = []
    for f in dataclasses.fields(params_type):
        if "knob" not in f.metadata:
            continue
        kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        knobs.append(Knob(f.name, kinds[0], f.metadata["knob"]))
    return tuple(knobs)


def resolve_knobs(request: Mapping[str, Any], model: Mapping[str, Any],
                  api: Mapping[str, Any] = {}) -> dict[str, Optional[Any]]:  # noqa: B006 - read only
    """Each knob of ``request``'s keys: the request's value unless ``None``, else the model's,
    else the API's, else ``None``. Keys that are not knobs pass through unchanged."""
    resolved: dict[str, Optional[Any]] = dict(request)
    for knob in sampling_knobs():
        value = request.get(knob.name)
        if value is None:
            value = model.get(knob.name)
        if value is None:
            value = api.get(knob.name)
        resolved[knob.name] = value
    return resolved
