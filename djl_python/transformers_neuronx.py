"""DJL Serving entry point (``option.entryPoint=djl_python.transformers_neuronx``).

``handle(inputs)`` is what the worker (``python -m djl_python.worker``) calls
for every message from DJL's Java front end:

1. The first message carries the model properties and no content: load the
   configuration and the engine, return ``None``. Whether Java will drive a
   rolling batch is decided from those properties exactly as Java decides it
   (``djl_python.djl.rules``); a DJL-launched handler defaults
   ``n_positions`` to LMI's 128.
2. Rolling batch: every call carries ALL in-flight requests in a stable
   order, old ones first (empty data, no properties) and new ones appended.
   We add engine requests only for indices ``>= len(self.active)``, run ONE
   ``engine.step()`` and reply with one ``batch_{i}.data`` record per
   in-flight request (``djl_python.djl.records``: binary on DJL 0.28, JSON
   before). Finished requests are dropped in the same call, exactly when Java
   drops them (``removeIf(last)``), so both sides keep the same order. A
   message without ``batch_size`` (Java's plain path: a request carrying its
   own ``handler``) is served alone to completion as a plain response.
3. Static batch (Java not rolling): run every prompt of the call to
   completion and reply per input with a JSON list of ``{"generated_text"}``
   holding prompt and generation, as DJL's handler (``generate`` returns both).

Parsing, translation and rendering are the API layer's
(``djl_python.api.lmi``, ``djl_python.api.lmi_render``), shared with the HTTP
server's ``/invocations``; this module is the DJL transport only (the DJL wire
rules live in ``djl_python.djl``).

A request that fails validation fails alone: in a rolling batch with DJL's
code 424 and record shape, in a static batch with 400 naming the field.
An exception in the step ends every in-flight request with its format's error
frame and resets the engine; Java's ``reset_rollingbatch`` property resets too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from djl_python.api.errors import to_api_error
from djl_python.api.lmi import LmiRequest, parse_request, to_engine
from djl_python.api.lmi_render import ResponseFormatter, lmi_renderer
from djl_python.api.names import served_model_name
from djl_python.api.prompt import EngineRequest, PromptBuilder, auto_tool_parser
from djl_python.djl import bodies, records, rules
from djl_python.djl.protocol import current as djl_protocol
from djl_python.engine.core import EngineCore
from djl_python.engine.request import InvalidRequest, RequestOutput
from djl_python.inputs import Input
from djl_python.outputs import Output

if TYPE_CHECKING:
    from djl_python.config import HandlerConfig

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
    code: int = records.FAILED_CODE
    held: str = ""  # text kept back one step (``records.hold_back``)


class TransformersNeuronXService:
    """The handler's state: configuration, engine and the in-flight requests in Java's order."""

    def __init__(self) -> None:
        self.config: Optional[HandlerConfig] = None
        self.engine: Optional[EngineCore] = None
        self.initialized = False
        self.init_error: Optional[str] = None
        self.active: list[_Active] = []
        self.prompts: Optional[PromptBuilder] = None
        self._model_name = ""
        self._rolling = False
        # Outputs of rolling requests produced while a plain request ran; sent with their next record.
        self._carry: dict[str, list[RequestOutput]] = {}

    def initialize(self, properties: dict[str, str], engine: Optional[EngineCore] = None,
                   config: Optional[HandlerConfig] = None,
                   rolling: Optional[bool] = None) -> None:
        """Load configuration and engine from ``properties``, or adopt a prepared ``engine``/``config``.

        ``rolling``: whether Java drives a rolling batch; unset, Java's rule on ``properties``.
        """
        self._rolling = rules.java_rolls(properties, djl_protocol()) if rolling is None else rolling
        if engine is None:
            config, engine = engine_factory(properties)
        elif config is None:
            config = handler_config(properties)
        self.config, self.engine = config, engine
        self.prompts = PromptBuilder(engine.tokenizer, model_defaults=engine.defaults,
                                     tool_parser=auto_tool_parser(config))
        self._model_name = served_model_name(config.model_id, config.model_dir)
        self.initialized = True
        logger.info("transformers_neuronx handler ready (rolling batch: %s)", self._rolling)

    @property
    def rolling(self) -> bool:
        """Whether Java drives this handler with its rolling-batch loop."""
        return self._rolling

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
                properties = inputs.get_properties()
                written = rules.written_rolling_batch(properties.get("model_dir"), os.environ)
                decision = rules.decide(properties, djl_protocol(), written)
                self.initialize(decision.properties, rolling=decision.rolling)
            except Exception as e:
                self.init_error = f"{type(e).__name__}: {e}"
                raise
            return None
        if inputs.is_empty() and not inputs.is_batch():
            return None  # a repeated initialising message: nothing to do
        if not self.rolling:
            return self.inference_static(inputs)
        if rules.is_plain_message(inputs.get_properties()):
            return self.inference_plain(inputs)
        return self.inference_rolling(inputs)

    # -- request set-up ---------------------------------------------------------------------

    def _parse(self, item: Input) -> LmiRequest:
        body = item.get_as_bytes()
        if body is None:
            raise InvalidRequest("body", "empty request")
        data = bodies.coerce_parameters(bodies.decode_body(body, item.get_content_type()))
        req = parse_request(data, item.get_content_type(), default_output_formatter=self.config.output_formatter,
                            tgi_compat=bool(self.config.tgi_compat), model_defaults=self.prompts.model_defaults,
                            tool_parser=self.prompts.tool_parser)
        seed = bodies.java_seed(item.get_as_string("seed")) if item.contains_key("seed") else None
        if seed is not None and req.params.seed is None and req.params.do_sample:
            # Java's per-request seed (rolling batch), for a sampled request that names none, as DJL's handler.
            req = dataclasses.replace(req, params=dataclasses.replace(req.params, seed=seed))
        if req.ignored:
            logger.warning("ignoring unsupported request fields: %s", ", ".join(req.ignored))
        return req

    def _one_prompt(self, req: LmiRequest) -> EngineRequest:
        """The engine request of a rolling or plain request: one prompt, or one chat."""
        req.check_single()  # one prompt per rolling request
        return to_engine(req, self.prompts)[0]

    def _start(self, item: Input) -> _Active:
        """Validate one new request and queue it in the engine; failures stay in the record."""
        try:
            req = self._parse(item)
            engine_request = self._one_prompt(req)
            request_id = self.engine.add_request(engine_request.prompt_ids, engine_request.params)
        except InvalidRequest as e:
            return _Active(error=to_api_error(e).text)
        except Exception as e:  # noqa: BLE001 - tokenizer or template failures: this request only
            logger.exception("request set-up failed")
            return _Active(error=f"{type(e).__name__}: {e}")
        formatter = lmi_renderer(req, engine_request, self.prompts, request_id=request_id,
                                 model_name=self._model_name)
        return _Active(formatter=formatter, request_id=request_id)

    # -- rolling batch --------------------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Forget every in-flight request and end them in the engine."""
        self.active.clear()
        self._carry.clear()
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
        protocol = djl_protocol()
        for i, act in enumerate(self.active):
            carried = self._carry.pop(act.request_id or "", [])
            if act.formatter is None:
                record, content_type, last = records.failure_record(act.error or "", protocol, act.code), \
                    ERROR_CONTENT_TYPE, True
            else:
                data = self._text(act.formatter, carried, outputs.get(act.request_id or ""), step_error)
                last = act.formatter.done
                if records.must_hold_back(protocol, act.formatter.kind):
                    data, act.held = records.hold_back(act.held, data, last)
                record, content_type = records.token_record(data, last, protocol), act.formatter.content_type
            reply.add(record, key=f"batch_{i}.data")
            reply.add_property(f"batch_{i}_Content-Type", content_type)
            if not last:
                alive.append(act)
        if step_error is not None:
            self.reset(step_error)
        self.active = alive
        return reply

    @staticmethod
    def _text(fmt: ResponseFormatter, carried: list[RequestOutput], out: Optional[RequestOutput],
              step_error: Optional[str]) -> str:
        """This step's text for one request: outputs carried over a plain request first, then this step's."""
        pieces = [fmt.format(o) for o in carried if not fmt.done]
        if step_error is not None and not fmt.done:
            pieces.append(fmt.error(step_error, out))
        elif out is not None and not fmt.done:
            pieces.append(fmt.format(out))
        return "".join(pieces)  # "" while waiting for a slot, or no token this step

    # -- a plain request while rolling ------------------------------------------------------------

    def inference_plain(self, inputs: Input) -> Output:
        """One request outside Java's rolling loop, run to completion; the whole response in one reply.

        Rolling requests in flight keep running in the same engine steps; their
        outputs are kept and sent with their next rolling record.
        """
        try:
            req = self._parse(inputs)
            engine_request = self._one_prompt(req)
            request_id = self.engine.add_request(engine_request.prompt_ids, engine_request.params)
        except InvalidRequest as e:
            return Output().error(to_api_error(e).text, code=400, message="invalid request")
        fmt = lmi_renderer(req, engine_request, self.prompts, request_id=request_id, model_name=self._model_name)
        pieces: list[str] = []
        try:
            while not fmt.done:
                for out in self.engine.step():
                    if out.request_id == request_id:
                        pieces.append(fmt.format(out))
                    else:
                        self._carry.setdefault(out.request_id, []).append(out)
        except Exception as e:  # noqa: BLE001 - the engine failed: this reply and every rolling request end
            logger.exception("engine step failed while serving a plain request")
            self.reset(f"{type(e).__name__}: {e}")
            return Output().error(f"{type(e).__name__}: {e}")
        return Output().add_property("Content-Type", fmt.content_type).add("".join(pieces), key="data")

    # -- static batch ---------------------------------------------------------------------------

    def inference_static(self, inputs: Input) -> Output:
        """Every prompt of every input generated together; one JSON list per input.

        Inputs are queued one by one so an invalid one (bad JSON, prompt too long)
        fails alone; the others run to completion in the same engine loop.
        """
        batch = inputs.get_batches()
        plans: list[Any] = []
        prompt_of: dict[str, list[int]] = {}
        for item in batch:
            ids: list[str] = []
            try:
                req = self._parse(item)
                pieces = to_engine(req, self.prompts)
                for piece in pieces:
                    rid = self.engine.add_request(piece.prompt_ids, piece.params)
                    ids.append(rid)
                    prompt_of[rid] = [] if req.is_chat else list(piece.prompt_ids)
            except InvalidRequest as e:
                for rid in ids:
                    self.engine.abort(rid)
                plans.append(e)
                continue
            plans.append((req, [piece.prompt_text for piece in pieces], ids))
        texts: dict[str, str] = {}
        tokens: dict[str, list[int]] = {}
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    texts[out.request_id] = texts.get(out.request_id, "") + out.text
                    tokens.setdefault(out.request_id, []).extend(out.token_ids)
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
            generated = [{"generated_text": self.prompts.full_text(prompt_of[rid], texts.get(rid, ""), tokens.get(rid, []))}
                         for rid in ids]
            reply.add_as_json(generated, key="data", batch_index=index)
        reply.add_property("Content-Type", "application/json")
        return reply


_service = TransformersNeuronXService()


def handle(inputs: Input) -> Optional[Output]:
    """DJL's entry-point function: one module-level service per worker process."""
    return _service.handle(inputs)


def partition(inputs: Input) -> None:
    """Ahead-of-time partition, the handler the LMI container's partition script calls.

    That script (djl-serving v0.28.0, ``serving/docker/partition/run_partition.py``)
    builds an ``Input`` whose properties are serving.properties without the
    ``option.`` prefix plus ``model_dir`` and ``entryPoint``, loads this module
    with ``service_loader`` and calls ``partition(inputs)``; it writes
    ``save_mp_checkpoint_path``. Defaults are a DJL-launched handler's
    (``n_positions`` 128) with ``device=neuron``. Raises ``ConfigError`` or
    ``ValueError`` naming what is missing.
    """
    from djl_python import partition as aot

    properties = dict(inputs.get_properties())
    properties.setdefault("device", "neuron")
    config = handler_config(rules.decide(properties, djl_protocol()).properties)
    if not config.save_mp_checkpoint_path:
        raise ValueError("option.save_mp_checkpoint_path is not set: partition needs an output folder")
    aot.partition(config, Path(config.save_mp_checkpoint_path))
