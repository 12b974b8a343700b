"""The engine: requests, scheduling, stopping and detokenising over a ``Backend``.

It speaks token ids and its own vocabulary (``SamplingParams``,
``RequestOutput``, ``FinishReason``); it knows no API (LMI, OpenAI, TGI) and no
transport. Importing this package imports neither torch nor Neuron; ``Engine``
loads the torch sampler (``djl_python.engine.sampling``) when it is constructed.
"""

from djl_python.engine.engine import Engine, GenerationResult
from djl_python.engine.generation_defaults import GenerationDefaults
from djl_python.engine.request import (
    FinishReason,
    InvalidRequest,
    RequestOutput,
    RequestStatus,
    SamplingParams,
)
from djl_python.engine.scheduler import Scheduler, SchedulerOutput

__all__ = [
    "Engine",
    "FinishReason",
    "GenerationDefaults",
    "GenerationResult",
    "InvalidRequest",
    "RequestOutput",
    "RequestStatus",
    "SamplingParams",
    "Scheduler",
    "SchedulerOutput",
]
