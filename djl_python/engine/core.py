"""``EngineCore``: what the transports may use of an engine.

``Engine`` is the one implementation; the HTTP server (``serving.async_engine.AsyncEngine``,
whose ``core`` it is) and the DJL handler type their engine with this Protocol, so a
wrapper (a test's recording or failing engine) needs these members and no others.
All calls come from one thread at a time (the engine thread, or DJL's worker thread).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from djl_python.backends.base import Backend, BackendLimits
    from djl_python.engine.constraint import Constraint
    from djl_python.engine.generation_defaults import GenerationDefaults
    from djl_python.engine.grammar import GrammarMatcher
    from djl_python.engine.prefix_cache import PrefixCache
    from djl_python.engine.request import RequestOutput, SamplingParams


class EngineCore(Protocol):
    backend: Backend
    tokenizer: Any  # a transformers tokenizer
    defaults: GenerationDefaults
    prefix_cache: Optional[PrefixCache]  # None when the backend keeps no cached rows

    @property
    def limits(self) -> BackendLimits: ...

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    def compile_constraint(self, constraint: Constraint) -> GrammarMatcher: ...

    def add_request(self, prompt_ids: list[int], params: SamplingParams,
                    request_id: Optional[str] = None, matcher: Optional[GrammarMatcher] = None) -> str: ...

    def abort(self, request_id: str) -> bool: ...

    def has_unfinished(self) -> bool: ...

    def step(self) -> list[RequestOutput]: ...

    def reset(self, error_message: str) -> list[RequestOutput]: ...
