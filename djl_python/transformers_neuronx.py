"""DJL Serving entry point (``option.entryPoint=djl_python.transformers_neuronx``).

``handle(inputs)`` is what the worker (``python -m djl_python.worker``) calls
for every message from DJL's Java front end:

1. The first message carries the model properties and no content: load the
   configuration and the engine, return ``None``.
2. Rolling batch (``option.rolling_batch`` other than ``disable``): every call
   carries ALL in-flight requests in a stable order, old ones first (empty
   data, no properties) and new ones appended. We add engine requests only for
   indices ``>= len(self.active)``, run ONE ``engine.step()`` and reply with one
   ``batch_{i}.data`` item per in-flight request, each
   ``Output.binary_encode({"data", "last"[, "code", "error"]})``. Finished
   requests are dropped in the same call, exactly when Java drops them
   (``removeIf(last)``), so both sides keep the same order.
3. Static batch (``rolling_batch=disable``): queue every prompt of the call and
   step the engine until all are done (``inference_static``), then reply per
   input with a JSON list of ``{"generated_text"}``.

Parsing, translation and rendering are the API layer's
(``djl_python.api.lmi``, ``djl_python.api.lmi_render``), shared with the HTTP
server's ``/invocations``; this module is the DJL transport only.

A request that fails validation fails alone (code 400, its own error record).
An exception in the step ends every in-flight request with its format's error
frame and resets the engine; Java's ``reset_rollingbatch`` property resets too.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from djl_python.api.errors import to_api_error
from djl_python.api.lmi import LmiRequest, parse_request, to_engine
from djl_python.api.lmi_render import ResponseFormatter, lmi_renderer
from djl_python.api.names import served_model_name
from djl_python.api.prompt import PromptBuilder
from djl_python.engine.request import InvalidRequest, RequestOutput
from djl_python.inputs import Input
from djl_python.outputs import Output

logger = logging.getLogger(__name__)

ERROR_CONTENT_TYPE = "application/json"


# Keys the Python side itself adds to the front end's properties (not written by users).
_WORKER_KEYS = frozenset({"model_dir", "device_id"})


def handler_config(properties: dict[str, str]) -> Any:
    """The ``HandlerConfig`` for the front end's properties.

    DJL's Java side strips ``option.`` and folds ``OPTION_*`` variables into the
    same map, so the user's spelling is lost; errors name ``option.<key>``, the
    serving.properties form, rather than a bare key the user never wrote.
    """
    from djl_python.config import load_config

    written = {key if key in _WORKER_KEYS or key.startswith("option.") else f"option.{key}": value
               for key, value in properties.items()}
    return load_config(model_dir=properties.get("model_dir"), properties=written)


def _default_engine_factory(properties: dict[str, str]) -> tuple[Any, Any]:
    """Production path: properties -> ``HandlerConfig`` -> engine (imported lazily: torch)."""
    from djl_python.loader import load_engine

    config = handler_config(properties)
    return config, load_engine(config)


# Tests replace this (or pass ``engine=`` to ``initialize``) to run a prepared engine.
engine_factory: Callable[[dict[str, str]], tuple[Any, Any]] = _default_engine_factory


@dataclass
class _Active:
    """One in-flight request, at its Java batch index. ``error`` set = failed before the engine."""

    formatter: Optional[ResponseFormatter] = None
    request_id: Optional[str] = None
    error: Optional[str] = None
    code: int = 400


class TransformersNeuronXService:
    """The handler's state: configuration, engine and the in-flight requests in Java's order."""

    def __init__(self) -> None:
        self.config: Any = None
        self.engine: Any = None
        self.initialized = False
        self.init_error: Optional[str] = None
        self.active: list[_Active] = []
        self.prompts: Optional[PromptBuilder] = None
        self._model_name = ""

    def initialize(self, properties: dict[str, str], engine: Any = None, config: Any = None) -> None:
        """Load configuration and engine from ``properties``, or adopt a prepared ``engine``/``config``."""
        if engine is None:
            config, engine = engine_factory(properties)
        elif config is None:
            config = handler_config(properties)
        self.config, self.engine = config, engine
        self.prompts = PromptBuilder(engine.tokenizer)
        self._model_name = served_model_name(config.model_id, config.model_dir)
        self.initialized = True
        logger.info("transformers_neuronx handler ready (rolling_batch=%s)", config.rolling_batch)

    @property
    def rolling(self) -> bool:
        return str(self.config.rolling_batch) != "disable"

    def handle(self, inputs: Input) -> Optional[Output]:
        """Initialise on the first (content-free) message, then serve requests.

        If initialisation failed (Java may carry on after a failed initialise),
        later requests get a 503 naming the original error instead of an
        attempt to initialise from a request's properties.
        """
        if not self.initialized:
            if inputs.is_batch() or not inputs.is_empty():
                reason = self.init_error or "the initialising message never arrived"
                return Output().error(f"model is not loaded: {reason}", code=503, message="model not loaded")
            try:
                self.initialize(inputs.get_properties())
            except Exception as e:
                self.init_error = f"{type(e).__name__}: {e}"
                raise
            return None
        if inputs.is_empty() and not inputs.is_batch():
            return None  # a repeated initialising message: nothing to do
        return self.inference_rolling(inputs) if self.rolling else self.inference_static(inputs)

    # -- request set-up ---------------------------------------------------------------------

    def _parse(self, item: Input) -> LmiRequest:
        body = item.get_as_bytes()
        if body is None:
            raise InvalidRequest("body", "empty request")
        req = parse_request(body, item.get_content_type(), default_output_formatter=self.config.output_formatter,
                            tgi_compat=bool(self.config.tgi_compat))
        if req.ignored:
            logger.warning("ignoring unsupported request fields: %s", ", ".join(req.ignored))
        return req

    def _start(self, item: Input) -> _Active:
        """Validate one new request and queue it in the engine; failures stay in the record."""
        try:
            req = self._parse(item)
            if not req.is_chat:
                req.prompt  # noqa: B018 - one prompt per rolling request; raises InvalidRequest("inputs")
            engine_request = to_engine(req, self.prompts)[0]
            params = engine_request.params
            seed = item.get_as_string("seed") if item.contains_key("seed") else None
            if params.seed is None and params.do_sample and seed is not None and seed.isdigit():
                params = dataclasses.replace(params, seed=int(seed))  # Java's per-request seed
            request_id = self.engine.add_request(engine_request.prompt_ids, params)
        except InvalidRequest as e:
            return _Active(error=to_api_error(e).text, code=400)
        except Exception as e:  # noqa: BLE001 - tokenizer or template failures: this request only
            logger.exception("request set-up failed")
            return _Active(error=f"{type(e).__name__}: {e}", code=424)
        formatter = lmi_renderer(req, engine_request, self.prompts, request_id=request_id,
                                 model_name=self._model_name)
        return _Active(formatter=formatter, request_id=request_id)

    # -- rolling batch --------------------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Forget every in-flight request and end them in the engine."""
        self.active.clear()
        self.engine.reset(reason)

    def inference_rolling(self, inputs: Input) -> Output:
        if str(inputs.get_properties().get("reset_rollingbatch", "")).lower() == "true":
            self.reset("reset requested by the front end")
        batch = inputs.get_batches()
        if len(batch) < len(self.active):
            # Java dropped requests we still track: only a reset resynchronises the two lists.
            logger.error("front end sent %d requests but %d are in flight; resetting", len(batch), len(self.active))
            self.reset("front end and worker disagree on the in-flight requests")
        for item in batch[len(self.active):]:
            self.active.append(self._start(item))

        outputs: dict[str, RequestOutput] = {}
        step_error: Optional[str] = None
        if self.engine.has_unfinished():
            try:
                outputs = {o.request_id: o for o in self.engine.step()}
            except Exception as e:  # noqa: BLE001 - any engine failure ends the whole batch
                logger.exception("engine step failed; ending every in-flight request")
                step_error = f"{type(e).__name__}: {e}"

        reply = Output()
        alive = []
        for i, act in enumerate(self.active):
            record, content_type = self._record(act, outputs.get(act.request_id or ""), step_error)
            reply.add(Output.binary_encode(record), key=f"batch_{i}.data")
            reply.add_property(f"batch_{i}_Content-Type", content_type)
            if record["last"] == "False":
                alive.append(act)
        if step_error is not None:
            self.reset(step_error)
        self.active = alive
        return reply

    @staticmethod
    def _record(act: _Active, out: Optional[RequestOutput], step_error: Optional[str]) -> tuple[dict[str, Any], str]:
        if act.formatter is None:
            return {"data": "", "last": "True", "code": act.code, "error": act.error}, ERROR_CONTENT_TYPE
        fmt = act.formatter
        if step_error is not None:
            data = fmt.error(step_error, out)
        elif out is not None:
            data = fmt.format(out)
        else:
            data = ""  # still waiting for a slot, or no token this step
        return {"data": data, "last": str(fmt.done)}, fmt.content_type

    # -- static batch ---------------------------------------------------------------------------

    def inference_static(self, inputs: Input) -> Output:
        """Every prompt of every input generated together; one JSON list per input.

        Inputs are queued one by one so an invalid one (bad JSON, prompt too long)
        fails alone; the others run to completion in the same engine loop.
        """
        batch = inputs.get_batches()
        plans: list[Any] = []
        for item in batch:
            ids: list[str] = []
            try:
                req = self._parse(item)
                pieces = to_engine(req, self.prompts)
                for piece in pieces:
                    ids.append(self.engine.add_request(piece.prompt_ids, piece.params))
            except InvalidRequest as e:
                for rid in ids:
                    self.engine.abort(rid)
                plans.append(e)
                continue
            plans.append((req, [piece.prompt_text for piece in pieces], ids))
        texts: dict[str, str] = {}
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    texts[out.request_id] = texts.get(out.request_id, "") + out.text
        except Exception as e:  # noqa: BLE001 - the whole static batch failed
            logger.exception("static batch failed")
            self.engine.reset(str(e))
            return Output().error(f"{type(e).__name__}: {e}")
        if not inputs.is_batch():
            plan = plans[0]
            if isinstance(plan, InvalidRequest):
                return Output().error(to_api_error(plan).text, code=400, message="invalid request")
        reply = Output()
        for i, plan in enumerate(plans):
            index = i if inputs.is_batch() else None
            if isinstance(plan, InvalidRequest):
                reply.add_as_json({"code": 400, "error": to_api_error(plan).text}, key="data", batch_index=index)
                continue
            req, prompts, ids = plan
            generated = [
                {"generated_text": (prompt if req.return_full_text else "") + texts.get(rid, "")}
                for prompt, rid in zip(prompts, ids)
            ]
            reply.add_as_json(generated, key="data", batch_index=index)
        reply.add_property("Content-Type", "application/json")
        return reply


_service = TransformersNeuronXService()


def handle(inputs: Input) -> Optional[Output]:
    """DJL's entry-point function: one module-level service per worker process."""
    return _service.handle(inputs)
