"""From configuration and artifacts to a running Neuron strategy: :func:`load_neuron_backend`.

It decides the load plan, applies the Neuron environment (``NEURON_CC_FLAGS``,
``NEURON_COMPILE_CACHE_URL``), loads and compiles (or reloads saved graphs) within
``option.model_loading_timeout``, and returns the strategy of :mod:`.strategies`
that the plan names: ``ContinuousBatchingBackend`` or ``NaiveRollingBatchBackend``.

Where the plan comes from (see :mod:`.plan`):

* a folder written by ``djl-partition`` (``neuron.djl_python.plan`` in
  config.json): the recorded plan, so the saved NEFFs match by hash;
* a DJL-partitioned folder (presharded weights in ``compiled/``): the serving
  configuration (whose unset shape the artifacts' neuron block already filled in),
  then the optimum-neuron candidates;
* any other optimum-neuron export: one candidate per optimum-neuron era (the
  export does not say which release wrote it), tried in turn against the NEFFs;
* a Hugging Face checkpoint: the serving configuration.

Nothing here has run on Neuron hardware; it is exercised through the test
double in ``tests/neuron_double`` (docs/neuron.md lists what that covers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional

from djl_python.artifacts import check_manifest, upload_s3
from djl_python.artifacts.manifest import library_versions
from djl_python.backends.model_defaults import eos_token_ids
from djl_python.backends.neuron.backend import NeuronBackend
from djl_python.backends.neuron.devices import visible_core_count
from djl_python.backends.neuron.loader import import_features, load_optimum_model, load_tnx_model
from djl_python.backends.neuron.memory import NeuronMemoryPlan, check_neuron_memory
from djl_python.backends.neuron.plan import (
    COMPILE_ONLY_KEYS,
    CONTINUOUS,
    NAIVE,
    NeuronLoadPlan,
    default_n_positions,
    plan_from_config,
    plan_hazard,
    plans_from_optimum_block,
)
from djl_python.backends.neuron.smart_defaults import default_n_positions as lmi_default_n_positions
from djl_python.backends.neuron.smart_defaults import smart_defaults
from djl_python.backends.neuron.speculation import SpeculativeBackend
from djl_python.backends.neuron.strategies import ContinuousBatchingBackend, NaiveRollingBatchBackend
from djl_python.backends.neuron.versions import NeuronVersionError, TnxFeatures, fmt, model_support
from djl_python.config import ConfigError, ConfigProblem, apply_environment, dtypes

if TYPE_CHECKING:
    from djl_python.artifacts import ModelArtifacts
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)
PLAN_KEY = "djl_python"  # neuron.djl_python.plan in config.json, written by djl-partition


def compile_config(plan: NeuronLoadPlan) -> dict[str, Any]:
    """Everything that changes the compiled graphs, for ``djl_manifest.json`` (not how they are
    compiled: :data:`COMPILE_ONLY_KEYS` are left out)."""
    graph_options = {k: v for k, v in plan.neuron_options.items() if k not in COMPILE_ONLY_KEYS}
    speculation = {"speculation_length": plan.speculation_length} if plan.speculation_length else {}
    return {"model_type": plan.model_type, "strategy": plan.strategy, **plan.model_kwargs,
            "neuron_config": graph_options, **speculation}


def load_neuron_backend(config: HandlerConfig, artifacts: ModelArtifacts) -> NeuronBackend:
    """Load (compiling if needed) the model in ``artifacts`` as configured, as the strategy its plan names;
    see the module docstring.

    Raises ``NeuronVersionError`` for what the installed TNX cannot do and
    ``NeuronLoadTimeout`` past ``option.model_loading_timeout``.
    """
    started = time.monotonic()
    deadline = started + config.model_loading_timeout
    # The artifacts layer may have downloaded compiled_graph_path or copied a read-only
    # mount; the compiler must use that local, writable copy.
    cache = artifacts.compiled_dir if config.compiled_graph_path else None
    changed = apply_environment(config, compile_cache=cache)
    if changed:
        logger.info("Neuron environment: %s", changed)
    tnx, features = import_features()
    model_support(artifacts.model_type, features.version)
    check_sliding_window(artifacts, features)
    config = with_smart_defaults(config, artifacts)
    target_memory = None
    if config.model_loader == "optimum":
        model, plan = _load_with_optimum(config, artifacts, features, deadline)
    else:
        plans = decide_plans(config, artifacts, features)
        target_memory = check_neuron_memory(plans[0], config, artifacts.hf_config, artifacts.checkpoint_dir)
        check_checkpoint(artifacts, features, plans[0])
        _check_manifest(artifacts, plans[0], str(getattr(tnx, "__version__", "")))
        present = _files(artifacts.compiled_dir)
        model, plan = load_tnx_model(
            plans, artifacts.checkpoint_dir, artifacts.compiled_dir,
            deadline=deadline, timeout_s=config.model_loading_timeout,
        )
        _publish_compiled(config, artifacts, present)
    common = {"vocab_size": int(artifacts.hf_config["vocab_size"]), "eos_ids": _eos_ids(artifacts),
              "tnx_version": str(getattr(tnx, "__version__", fmt(features.version)))}
    backend: NeuronBackend
    plan = _speculation_as_configured(config, plan)
    if plan.speculation_length:
        draft = _load_draft(config, plan, features, deadline, target_memory)
        backend = SpeculativeBackend(model, plan, draft=draft, speculation_length=plan.speculation_length, **common)
    elif plan.strategy == CONTINUOUS:
        backend = ContinuousBatchingBackend(model, plan, **common)
    else:
        backend = NaiveRollingBatchBackend(model, plan, **common)
    logger.info("Neuron backend ready (%s) in %.1f s", plan.strategy, time.monotonic() - started)
    return backend


def _speculation_as_configured(config: HandlerConfig, plan: NeuronLoadPlan) -> NeuronLoadPlan:
    """Speculate only with a draft configured. A recorded plan with a speculation graph serves without it
    when no draft is set (the extra graphs are never looked up, c8d6bdc base.py:550-560); a draft set for
    graphs compiled without speculation (a recorded plan, an optimum-neuron export) is ignored with a
    warning, since adding the graph would miss every saved NEFF."""
    if plan.speculation_length and not config.speculative_draft_model:
        logger.info("serving without speculative decoding: the compiled model has a speculation graph, but "
                    "option.speculative_draft_model is not set")
        return dataclasses.replace(plan, speculation_length=0)
    if config.speculative_draft_model and not plan.speculation_length:
        logger.warning("%s is ignored: the compiled model in use has no speculation graph (compile or partition it "
                       "with the option to speculate)", config.origin("speculative_draft_model"))
    elif (plan.speculation_length and "speculative_length" in config.model_fields_set
          and config.speculative_length != plan.speculation_length):
        logger.warning("%s=%d is ignored: the compiled model's speculation graph scores %d tokens, which is used",
                       config.origin("speculative_length"), config.speculative_length, plan.speculation_length)
    return plan


def _load_draft(config: HandlerConfig, target: NeuronLoadPlan, features: TnxFeatures, deadline: float,
                target_memory: Optional[NeuronMemoryPlan] = None) -> Any:
    """The draft model, as LMI 0.28 builds it (djl-serving v0.28.0 transformers_neuronx.py:148-163): the
    target's settings with ``speculative_draft_model`` as the model, ``draft_model_tp_size`` as its degree
    and ``draft_model_compiled_path`` as its graphs; one sequence, no speculation of its own, and the
    target's ``n_positions`` (its cache must hold every position the target's does)."""
    from djl_python.artifacts import resolve_artifacts

    update: dict[str, Any] = {"model_id": config.speculative_draft_model, "model_dir": None,
                              "compiled_graph_path": config.draft_model_compiled_path,
                              "speculative_draft_model": None, "n_positions": target.n_positions}
    if config.draft_model_tp_size:
        update["tensor_parallel_degree"] = config.draft_model_tp_size
    draft_config = config.model_copy(update=update)
    artifacts = resolve_artifacts(draft_config)
    model_support(artifacts.model_type, features.version)
    try:
        plan = plan_from_config(draft_config, artifacts.model_type, artifacts.hf_config,
                                tp_degree=tensor_parallel_degree(draft_config), features=features)
    except ConfigError as err:  # the draft inherits the target's settings; say which model they failed for
        raise ConfigError([ConfigProblem(
            config.origin("speculative_draft_model"), config.speculative_draft_model,
            f"the draft model cannot take the target's settings (n_positions {target.n_positions}): {err}")]) from err
    check_checkpoint(artifacts, features, plan)
    check_neuron_memory(plan, draft_config, artifacts.hf_config, artifacts.checkpoint_dir, target_memory)
    logger.info("loading the draft model %s (%s, tp_degree=%s)", config.speculative_draft_model,
                artifacts.model_type, plan.model_kwargs.get("tp_degree"))
    model, _ = load_tnx_model(plan, artifacts.checkpoint_dir, artifacts.compiled_dir, deadline=deadline,
                              timeout_s=config.model_loading_timeout)
    return model


def with_smart_defaults(config: HandlerConfig, artifacts: ModelArtifacts) -> HandlerConfig:
    """``config`` with LMI's smart ``tensor_parallel_degree`` and ``max_rolling_batch_size``
    (:mod:`.smart_defaults`) for those the user left unset, each logged with its reason. Not for
    compiled artifacts, whose shape is fixed, nor without visible NeuronCores. ``n_positions``
    keeps this backend's default, which is LMI's (``min(max_position_embeddings, 4096)``) capped
    where a release needs it (Mistral's sliding window)."""
    unset = [key for key in ("tensor_parallel_degree", "max_rolling_batch_size")
             if key not in config.model_fields_set]
    if artifacts.neuron_block is not None or not unset:
        return config
    if config.n_positions is None and lmi_default_n_positions(artifacts.hf_config) <= 0:
        logger.info("[Smart Default] none: config.json has no max_position_embeddings (LMI skips it too)")
        return config
    cores = visible_core_count()
    given_tp = None if "tensor_parallel_degree" in unset else (
        cores if config.tensor_parallel_degree == "max" else int(config.tensor_parallel_degree))
    rolling_unset = config.rolling_batch_enabled and "max_rolling_batch_size" in unset
    chosen = smart_defaults(
        artifacts.hf_config, cores=cores, quantized=config.quantize == "static_int8",
        n_positions=config.n_positions or default_n_positions(artifacts.hf_config),
        tensor_parallel_degree=given_tp, max_rolling_batch_size=None if rolling_unset else config.max_slots)
    for reason in chosen.reasons:
        logger.info("[Smart Default] %s", reason)
    update = {k: v for k, v in chosen.as_options().items() if k != "n_positions"}
    return config.model_copy(update=update) if update else config


def tensor_parallel_degree(config: HandlerConfig) -> int:
    """``tensor_parallel_degree``, with ``max`` = every visible NeuronCore."""
    if config.tensor_parallel_degree == "max":
        return config.resolved_tp_degree(visible_core_count())
    degree = int(config.tensor_parallel_degree)
    if os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip() and degree > visible_core_count():
        raise ConfigError([ConfigProblem(
            "option.tensor_parallel_degree", degree,
            f"NEURON_RT_VISIBLE_CORES={os.environ['NEURON_RT_VISIBLE_CORES']} makes {visible_core_count()} "
            "NeuronCores visible")])
    return degree


def decide_plans(config: HandlerConfig, artifacts: ModelArtifacts, features: TnxFeatures) -> list[NeuronLoadPlan]:
    """The candidate load plans for these artifacts (precedence in the module docstring), preferred first.

    Plans this backend did not build (optimum-neuron era candidates, a recorded plan) pass the same
    per-release rules (``plan_hazard``): an unsafe one is skipped with the reason, and when none is
    safe the load is refused, naming why, before anything loads.
    """
    block = artifacts.neuron_block
    if block is None or artifacts.compiled_dir is None:
        return [plan_from_config(config, artifacts.model_type, artifacts.hf_config,
                                 tp_degree=tensor_parallel_degree(config), features=features)]
    recorded = (block.get(PLAN_KEY) or {}).get("plan")
    if recorded is not None:
        candidates = [NeuronLoadPlan.from_json(recorded)]
    else:
        candidates = plans_from_optimum_block(block, artifacts.model_type, features)
        if artifacts.presharded:
            # A DJL-partitioned folder was compiled from the serving configuration, not by optimum-neuron;
            # what the configuration left unset already comes from its neuron block (dispatch.load_backend).
            own = plan_from_config(config, artifacts.model_type, artifacts.hf_config,
                                   tp_degree=tensor_parallel_degree(config), features=features)
            candidates = [own, *candidates]
    safe, refused = [], []
    for plan in candidates:
        hazard = plan_hazard(plan, artifacts.hf_config, features)
        if hazard is None:
            safe.append(plan)
        else:
            refused.append(f"{plan.variant or 'the recorded plan'}: {hazard}")
            logger.warning("not using %s for %s: %s", plan.variant or "the recorded plan", artifacts.model_dir, hazard)
    if not safe:
        raise NeuronVersionError(
            f"the compiled model in {artifacts.model_dir} cannot be served safely by transformers-neuronx "
            f"{fmt(features.version)}: {'; '.join(refused)}. Re-export it (continuous batching, or batch size 1) "
            "or serve its checkpoint")
    return safe


def check_checkpoint(artifacts: ModelArtifacts, features: TnxFeatures, plan: NeuronLoadPlan) -> None:
    """Refuse, before anything loads, weights the installed transformers-neuronx cannot read.

    * Sharded checkpoints (``*.index.json``: every 7B+ model) are read from 0.10
      (7a30b42 ``module.py``); 0.9 (8b01968) reads only ``model.safetensors``, a
      ``pytorch_model.bin`` file or a split ``pytorch_model.bin/`` directory.
    * Presharded weights (``save(dir, sharded_weights=True)``, ``is_presharded_checkpoint``)
      need ``save(..., sharded_weights)`` (1ade6d7) and ``on_device_embedding`` (its assert).
    """
    if artifacts.sharded and not features.sharded_checkpoints:
        raise NeuronVersionError(
            f"{artifacts.checkpoint_dir} is a sharded checkpoint, which transformers-neuronx "
            f"{fmt(features.version)} cannot read (0.9 reads model.safetensors, pytorch_model.bin or a split "
            "pytorch_model.bin/ directory); upgrade transformers-neuronx to >= 0.10 or save the model unsharded "
            "(save_pretrained(..., max_shard_size=\"1000GB\"))")
    if artifacts.presharded:
        if not features.presharded:
            raise NeuronVersionError(
                f"{artifacts.checkpoint_dir} holds presharded weights (is_presharded_checkpoint), which "
                f"transformers-neuronx {fmt(features.version)} cannot load; install a release with "
                "save(directory, sharded_weights=True) (0.13) or serve the Hugging Face checkpoint")
        if not plan.neuron_options.get("on_device_embedding"):
            raise NeuronVersionError(
                f"{artifacts.checkpoint_dir} holds presharded weights, which transformers-neuronx loads only with "
                "on_device_embedding (as when they were saved): unset option.on_device_embedding or set it to true")


def check_sliding_window(artifacts: ModelArtifacts, features: TnxFeatures) -> None:
    """TNX 0.9's Mistral and Mixtral subtract ``sliding_window`` from a token count at every
    forward (8b01968 ``mistral/model.py:136``, ``mixtral/model.py:151``), so a config whose
    ``sliding_window`` is null (Mistral v0.2/v0.3, Mixtral) fails at the first request; 7a30b42
    guards it. Refused before anything compiles."""
    if (artifacts.model_type in ("mistral", "mixtral") and features.version < (0, 10)
            and artifacts.hf_config.get("sliding_window") is None):
        raise NeuronVersionError(
            f"transformers-neuronx {fmt(features.version)} cannot serve this {artifacts.model_type}: its config.json "
            "has sliding_window null, which 0.9's model subtracts at every step; install transformers-neuronx "
            ">= 0.10")



def _eos_ids(artifacts: ModelArtifacts) -> tuple[int, ...]:
    generation: dict[str, Any] = {}
    path = Path(artifacts.model_dir) / "generation_config.json"
    if path.is_file():
        generation = json.loads(path.read_text())
    return eos_token_ids(SimpleNamespace(**{"eos_token_id": artifacts.hf_config.get("eos_token_id")}),
                         SimpleNamespace(eos_token_id=generation.get("eos_token_id")))


def _check_manifest(artifacts: ModelArtifacts, plan: NeuronLoadPlan, tnx_version: str) -> None:
    """Refuse saved graphs whose manifest says they were built with other settings or with another
    transformers-neuronx / a newer neuronx-cc (before loading weights)."""
    if artifacts.manifest is not None and artifacts.compiled_dir is not None:
        installed = library_versions()
        check_manifest(artifacts.manifest, compile_config(plan), where=str(artifacts.compiled_dir),
                       compiler_version=installed.get("neuronx-cc"), tnx_version=tnx_version)


def _files(folder: Path | None) -> set[Path]:
    return set() if folder is None or not Path(folder).is_dir() else {p for p in Path(folder).rglob("*") if p.is_file()}


def _publish_compiled(config: HandlerConfig, artifacts: ModelArtifacts, present: set[Path]) -> None:
    """An ``s3://`` ``compiled_graph_path`` receives the graphs newly compiled into its local copy (files
    not ``present`` before loading), as the Neuron compile cache does when ``NEURON_COMPILE_CACHE_URL``
    is s3. A failed upload is logged, not fatal."""
    url = config.compiled_graph_path
    if not url or not str(url).startswith("s3://") or artifacts.compiled_dir is None:
        return
    if not _files(artifacts.compiled_dir) - present:
        return
    try:
        upload_s3(Path(artifacts.compiled_dir), str(url), skip=present)
    except Exception:  # noqa: BLE001 - serving goes on with the local graphs
        logger.exception("could not upload the compiled graphs in %s to %s", artifacts.compiled_dir, url)


def _load_with_optimum(
    config: HandlerConfig, artifacts: ModelArtifacts, features: TnxFeatures, deadline: float
) -> tuple[Any, NeuronLoadPlan]:
    """``model_loader=optimum``: optimum-neuron builds the TNX model; we drive its ``.model``."""
    block = artifacts.neuron_block
    export = None
    if block is None:
        plan = plan_from_config(config, artifacts.model_type, artifacts.hf_config,
                                tp_degree=tensor_parallel_degree(config), features=features)
        export = {"batch_size": plan.batch_size, "sequence_length": plan.n_positions,
                  "num_cores": plan.model_kwargs["tp_degree"],
                  "auto_cast_type": dtypes.canonical(plan.model_kwargs["amp"])}
    wrapper = load_optimum_model(Path(artifacts.model_dir), export_kwargs=export, deadline=deadline,
                                 timeout_s=config.model_loading_timeout)
    neuron_block = block or dict(getattr(wrapper.config, "neuron", {}) or export or {})
    # The installed optimum-neuron built the model: the strategy is what it built (continuous
    # batching in the model's NeuronConfig or not), not any era's guess; each optimum era decided
    # it differently (e.g. mixtral with batch > 1 only in v0.0.22-23).
    plan = plans_from_optimum_block(neuron_block, artifacts.model_type, features)[0]
    built = built_strategy(wrapper.model)
    if built != plan.strategy:
        plan = dataclasses.replace(plan, strategy=built, variant=f"{plan.variant}, strategy as built")
    hazard = plan_hazard(plan, artifacts.hf_config, features, built=True)
    if hazard is not None:  # this loader has no other candidate to try
        raise NeuronVersionError(f"optimum-neuron built this {artifacts.model_type} as {plan.strategy} with a batch of "
                                 f"{plan.batch_size}, which cannot be served safely: {hazard}. Re-export it (continuous "
                                 "batching, or batch_size 1) or use option.model_loader=tnx")
    return wrapper.model, plan


def built_strategy(model: Any) -> str:
    """``continuous_batching`` when the built TNX model has continuous batching in its
    ``neuron_config``, else ``naive_rolling_batch``."""
    neuron_config = getattr(model, "neuron_config", None)
    return CONTINUOUS if getattr(neuron_config, "continuous_batching", None) else NAIVE
