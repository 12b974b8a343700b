"""Turning a :class:`NeuronLoadPlan` into a compiled transformers-neuronx (TNX) model.

Order of operations (the TNX contract, reference §1.4):

1. ``cls.from_pretrained(checkpoint, **kwargs)`` binds the weights lazily; nothing compiles.
2. ``model.load(compiled_dir)`` when saved NEFFs exist; this must come *before*
3. ``model.to_neuron()``: shard, compile (or take the loaded/cached NEFFs), load onto the cores.

Steps 1-3 run in a worker thread bounded by ``option.model_loading_timeout``
(counted from the start of the backend load). Python cannot stop a thread, so
on timeout the compile keeps running in the background while the error is
raised; the worker process is expected to exit on a load failure.

The compile runs in ``compile_environment``: transformers-neuronx compiles every graph in a
``ProcessPoolExecutor`` with the default start method (8b01968 ``base.py:44-53`` to 1ade6d7
``base.py:55-64``; no release sets one), which on Linux forks, and forking a process whose
other threads may hold locks can deadlock the workers; the loader runs in a thread beside the
server, so the start method is ``forkserver`` for the duration. A working directory the process
cannot write (SageMaker starts the worker in the read-only ``/opt/ml/model``) is left for the
temporary directory while compiling, as DJL does (afece25d ``model_loader.py:385, 411``,
``chdir('/tmp')`` around ``to_neuron()``), and restored after, even on failure. Both are
process-wide, so one lock serialises them. The fork server is stopped afterwards: it keeps the
environment it started with, and the next compile may run with another. Entry points must guard
``__main__`` (each worker imports the main module as ``__mp_main__``, as under ``spawn``); every
entry point of this package does.

Several candidate plans (an optimum-neuron export of unknown era) are tried in
order against the saved graphs; "Could not find a matching NEFF" moves to the
next, and when none matches the first is compiled, with a warning.
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence, TypeVar

from djl_python.backends.neuron.plan import COMPILE_ONLY_KEYS, OPTION_OF_KEY, NeuronLoadPlan
from djl_python.backends.neuron.versions import (
    NeuronVersionError,
    TnxFeatures,
    detect_features,
    fmt,
    key_since,
    model_support,
    neuron_config_keys,
    parse_version,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
NEURON_INDEX = "https://pip.repos.neuron.amazonaws.com"
# transformers-neuronx's error when saved graphs do not match: a FileNotFoundError raised by
# to_neuron() after the weights are loaded (8b01968 base.py:419-429, 1ade6d7 base.py:775-785).
NEFF_MISS = "Could not find a matching NEFF"


class NeuronLoadTimeout(TimeoutError):
    """Loading and compiling took longer than ``option.model_loading_timeout``."""


def import_tnx() -> tuple[ModuleType, tuple[int, int]]:
    """The installed ``transformers_neuronx`` and its ``(major, minor)`` version."""
    try:
        tnx = importlib.import_module("transformers_neuronx")
    except ImportError as err:
        raise NeuronVersionError(
            "device=neuron needs transformers-neuronx, which is not installed: "
            f"pip install transformers-neuronx --extra-index-url {NEURON_INDEX} (on an Inf2/Trn1 host)"
        ) from err
    return tnx, parse_version(getattr(tnx, "__version__", "0.0"))


def import_features() -> tuple[ModuleType, TnxFeatures]:
    """The installed ``transformers_neuronx`` and what it can do (:class:`TnxFeatures`)."""
    tnx, version = import_tnx()
    model_support("llama", version)  # refuses versions below the supported range, naming it
    return tnx, detect_features(tnx, version)


def model_class(tnx: ModuleType, version: tuple[int, int], model_type: str) -> type:
    """The class whose ``from_pretrained`` builds the model.

    ``NeuronAutoModelForCausalLM`` (0.10+) where installed and where it maps to
    the class we drive, as DJL does. Its ``gpt2`` entry is the context-broadcasting
    class (one prompt for every row), so GPT-2 always gets ``GPT2ForSampling``
    from its module, like DJL and optimum-neuron. Older versions get every class
    from its own module (the top-level re-exports only came with 0.10).
    """
    sup = model_support(model_type, version)  # clear error for unsupported types and versions
    if sup.auto_class and hasattr(tnx, "NeuronAutoModelForCausalLM"):
        return tnx.NeuronAutoModelForCausalLM
    return getattr(importlib.import_module(f"transformers_neuronx.{sup.package}.model"), sup.class_name)


def build_neuron_config(tnx: ModuleType, version: tuple[int, int], options: dict[str, Any],
                        layout_enum: bool | None = None) -> Any | None:
    """``NeuronConfig(**options)`` with TNX objects, after checking the installed version knows every key.

    Raises ``NeuronVersionError`` naming each option the installed version
    does not accept (it would reject them with a bare ``AssertionError``).
    """
    if not options:
        return None
    accepted = neuron_config_keys(tnx, version)
    for key in sorted(COMPILE_ONLY_KEYS & set(options) - accepted):
        # Only how the graphs are compiled: worth a warning, not a refusal. Earlier releases compile
        # every graph at once (8b01968..c8d6bdc base.py compile(): to_neuron passes no parallel_degree).
        logger.warning("%s has no effect on transformers-neuronx %s (NeuronConfig.%s from %s); every graph "
                       "compiles at once", OPTION_OF_KEY.get(key, key), fmt(version), key, key_since(key))
        options = {k: v for k, v in options.items() if k != key}
    if not options:
        return None
    unknown = [key for key in options if key not in accepted]
    if unknown:
        lines = [f"{OPTION_OF_KEY.get(k, k)} (NeuronConfig.{k}, from transformers-neuronx {key_since(k)})"
                 for k in unknown]
        raise NeuronVersionError(
            f"the installed transformers-neuronx {fmt(version)} does not support: {'; '.join(lines)}. "
            "Remove these options or upgrade transformers-neuronx"
        )
    # Where the classes live in every supported release (config.py / constants.py), not the
    # top-level re-exports (absent in 0.8 and partly in 0.9).
    config = importlib.import_module("transformers_neuronx.config")
    constants = importlib.import_module("transformers_neuronx.constants")
    if layout_enum is None:
        layout_enum = hasattr(constants, "Layout")
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key == "continuous_batching":
            value = config.ContinuousBatchingConfig(batch_size_for_shared_caches=int(value))
        elif key == "quant":
            value = config.QuantizationConfig(**value)
        elif key == "group_query_attention":
            value = constants.GQA(value)
        elif key.endswith("_layout") and layout_enum:
            value = constants.Layout(value)
        kwargs[key] = value
    return config.NeuronConfig(**kwargs)


def from_pretrained_kwargs(tnx: ModuleType, version: tuple[int, int], plan: NeuronLoadPlan) -> dict[str, Any]:
    kwargs = dict(plan.model_kwargs)
    neuron_config = build_neuron_config(tnx, version, plan.neuron_options)
    if neuron_config is not None:
        kwargs["neuron_config"] = neuron_config
    return kwargs


def has_neffs(folder: Path | None) -> bool:
    return folder is not None and folder.is_dir() and any(folder.glob("*.neff"))


_COMPILE_ENVIRONMENT = threading.Lock()


def _stop_forkserver() -> None:
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # CPython 3.9+ (private; absent elsewhere)
    if stop is not None:
        stop()


def writable(path: str) -> bool:
    """Whether this process may create files in ``path``."""
    return os.access(path, os.W_OK)


@contextmanager
def compile_environment() -> Iterator[None]:
    """The process state transformers-neuronx compiles in (module docstring): the ``forkserver``
    start method, and a writable working directory. Both are restored on exit."""
    with _COMPILE_ENVIRONMENT:
        previous = multiprocessing.get_start_method(allow_none=True)
        switch = (previous or multiprocessing.get_start_method()) == "fork"
        if switch:
            multiprocessing.set_start_method("forkserver", force=True)
        cwd = os.getcwd()
        moved = not writable(cwd)
        if moved:
            logger.info("compiling in %s: the working directory %s is not writable", tempfile.gettempdir(), cwd)
            os.chdir(tempfile.gettempdir())
        try:
            yield
        finally:
            if moved:
                os.chdir(cwd)
            if switch:
                multiprocessing.set_start_method(previous, force=True)
                # The fork server keeps the environment and directory it started with; stop it so the
                # next compile (another model, a changed NEURON_CC_FLAGS) starts one of its own.
                _stop_forkserver()


def run_with_deadline(fn: Callable[[], T], *, deadline: float, timeout_s: int, what: str) -> T:
    """Run ``fn`` in a daemon thread; raise ``NeuronLoadTimeout`` if it is not done by ``deadline``."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = err

    worker = threading.Thread(target=target, name="neuron-compile", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise NeuronLoadTimeout(
            f"{what} did not finish within option.model_loading_timeout={timeout_s} s. Raise "
            "option.model_loading_timeout, reuse a neff cache (option.compiled_graph_path), or compile ahead of "
            "time with `djl-partition --save-mp-checkpoint-path OUT` and serve the partitioned folder"
        )
    if "error" in result:
        raise result["error"]
    return result["value"]


def load_tnx_model(
    plans: NeuronLoadPlan | Sequence[NeuronLoadPlan],
    checkpoint_dir: Path,
    compiled_dir: Path | None,
    *,
    deadline: float,
    timeout_s: int,
) -> tuple[Any, NeuronLoadPlan]:
    """``from_pretrained`` -> ``load(compiled_dir)`` (when it holds NEFFs) -> ``to_neuron()``, within the deadline.

    With several candidate ``plans`` each is tried against the saved graphs in turn;
    when none matches, the first is compiled. Returns the model and the plan it was built with.
    """
    candidates = [plans] if isinstance(plans, NeuronLoadPlan) else list(plans)
    tnx, version = import_tnx()
    model_type = candidates[0].model_type
    cls = model_class(tnx, version, model_type)
    serializable = model_support(model_type, version).serializable
    use_neffs = has_neffs(compiled_dir)
    if use_neffs and not serializable:
        logger.warning("%s cannot load saved graphs (no serialization in TNX); compiling instead", model_type)
        use_neffs = False

    def build(plan: NeuronLoadPlan, with_neffs: bool) -> Any:
        started = time.monotonic()
        model = cls.from_pretrained(str(checkpoint_dir), **from_pretrained_kwargs(tnx, version, plan))
        if plan.speculation_length:  # its graphs are built by to_neuron(), and saved with the others
            model.enable_speculative_decoder(plan.speculation_length)
        if with_neffs:
            model.load(str(compiled_dir))
        with compile_environment():
            model.to_neuron()
        logger.info(
            "%s (%s) %s in %.1f s (batch=%d, n_positions=%d, tp_degree=%s, amp=%s, strategy=%s%s)",
            cls.__name__, plan.model_type,
            f"loaded with saved graphs from {compiled_dir}" if with_neffs else "compiled and loaded",
            time.monotonic() - started, plan.batch_size, plan.n_positions, plan.model_kwargs.get("tp_degree"),
            plan.model_kwargs.get("amp"), plan.strategy, f", {plan.variant}" if plan.variant else "",
        )
        return model

    def work() -> tuple[Any, NeuronLoadPlan]:
        if use_neffs:
            for plan in candidates:
                try:
                    return build(plan, True), plan
                except FileNotFoundError as err:  # what every release raises, after loading the weights
                    if NEFF_MISS not in str(err):
                        raise
                    # str(err): a log record holding the exception would keep the failed model (and its
                    # device memory) alive through the traceback, wherever a handler keeps records.
                    logger.warning("saved graphs in %s do not match %s (%s); trying the next candidate",
                                   compiled_dir, plan.variant or "the configured arguments", str(err))
                gc.collect()  # the failed model's weights, already on the device, go before the next try
            logger.warning("no candidate arguments match the saved graphs in %s; compiling with %s instead "
                           "(this takes as long as a first compilation)", compiled_dir,
                           candidates[0].variant or "the configured arguments")
        return build(candidates[0], False), candidates[0]

    what = "loading the model with saved Neuron graphs" if use_neffs else "compiling the model for Neuron"
    return run_with_deadline(work, deadline=deadline, timeout_s=timeout_s, what=what)


def load_optimum_model(model_dir: Path, *, export_kwargs: dict[str, Any] | None, deadline: float,
                       timeout_s: int) -> Any:
    """An optimum-neuron ``NeuronModelForCausalLM`` (``model_loader=optimum``); its ``.model`` is the TNX model.

    ``export_kwargs`` None loads an existing export; otherwise the model is
    exported (compiled) with them (``batch_size``, ``sequence_length``, ``num_cores``, ``auto_cast_type``).
    """
    try:
        from optimum.neuron import NeuronModelForCausalLM
    except ImportError as err:
        raise NeuronVersionError(
            "option.model_loader=optimum needs optimum-neuron (pip install optimum-neuron, a TNX-era release "
            f"<= 0.0.25, from {NEURON_INDEX}); or use option.model_loader=tnx"
        ) from err

    def work() -> Any:
        with compile_environment():  # optimum-neuron calls to_neuron() inside from_pretrained
            if export_kwargs is None:
                return NeuronModelForCausalLM.from_pretrained(str(model_dir))
            return NeuronModelForCausalLM.from_pretrained(str(model_dir), export=True, **export_kwargs)

    return run_with_deadline(work, deadline=deadline, timeout_s=timeout_s, what="loading the optimum-neuron model")
