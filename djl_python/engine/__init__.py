"""The engine: requests, scheduling, stopping and detokenising over a ``Backend``.

Importing this package imports neither torch nor Neuron; ``Engine`` loads the
torch sampler (``djl_python.engine.sampling``) when it is constructed.
"""

from djl_python.engine.chat import render_chat
from djl_python.engine.engine import Engine, GenerationResult
from djl_python.engine.generation_defaults import GenerationDefaults
from djl_python.engine.request import (
    OPENAI_FINISH_REASONS,
    TGI_FINISH_REASONS,
    InvalidRequest,
    RequestOutput,
    RequestStatus,
    SamplingParams,
)
from djl_python.engine.scheduler import Scheduler, SchedulerOutput

__all__ = [
    "Engine",
    "GenerationDefaults",
    "GenerationResult",
    "InvalidRequest",
    "OPENAI_FINISH_REASONS",
    "RequestOutput",
    "RequestStatus",
    "SamplingParams",
    "Scheduler",
    "SchedulerOutput",
    "TGI_FINISH_REASONS",
    "render_chat",
]
