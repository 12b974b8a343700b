"""Option honesty: an accepted option either acts, or says at load that it does not.

Every ``HandlerConfig`` field is in exactly one of these groups
(``tests/config/test_option_honesty.py`` checks it against the code and the docs):

* it acts (read by the loader, a backend, the engine, a transport or the
  Neuron environment step);
* DJL's Java front end reads it (``FRONT_END_FIELDS``): accepted silently, as
  DJL passes it through to every engine;
* it has no effect here (``NO_EFFECT``): accepted for compatibility with DJL's
  properties, and a warning naming the key (as the user wrote it) and why is
  logged at load whenever it is set to anything but its default;
* it acts only for some values (``inert_values``): the other values warn.

Invalid values are refused by validation; these warnings are about valid
values that would otherwise do nothing without a word.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

from djl_python.config.handler_config import HandlerConfig
from djl_python.config.lmi import TP_FROM_RECOMMENDER

logger = logging.getLogger("djl_python.config.load")

FRONT_END_FIELDS = frozenset({"engine", "entry_point", "job_queue_size"})

_SPECULATIVE = None  # the table's description already says "not supported, ignored"
_LMI_VLLM_LOADER = ("only LMI's vLLM loader passes it to transformers-neuronx (djl-serving afece25d "
                    "neuron_utils/model_loader.py:800-866); its transformers-neuronx loader does not, and neither does "
                    "this handler, so graphs LMI compiled with the same properties still match")
NO_EFFECT: dict[str, Optional[str]] = {
    "sequence_parallel": _LMI_VLLM_LOADER,
    "sequence_parallel_norm_threshold": _LMI_VLLM_LOADER,
    "mlp_out_weight_transpose": _LMI_VLLM_LOADER,
    "multi_node": _LMI_VLLM_LOADER,
    "neuron_cc_pipeline_factor": _LMI_VLLM_LOADER,
    "neuron_quant": _LMI_VLLM_LOADER + "; use option.quantize=static_int8",
    "waiting_steps": None,
    "mpi_mode": None,
    "draft_model_id": _SPECULATIVE,
    "spec_length": _SPECULATIVE,
    "low_cpu_mem_usage": "the backends load weights their own way (transformers-neuronx or transformers)",
    "enable_streaming": 'deprecated; each request chooses streaming with "stream": true',
}


def inert_values(config: HandlerConfig) -> dict[str, str]:
    """Fields whose value, though valid, does nothing here: ``{field: why}``."""
    found = {}
    if config.task not in (None, "text-generation"):
        found["task"] = "this handler serves text generation only"
    if config.model_loader == "vllm":
        found["model_loader"] = ("DJL's vLLM loader is not available here; the transformers-neuronx "
                                 "loader is used")
    if config.tool_call_parser is not None and not config.enable_auto_tool_choice:
        found["tool_call_parser"] = ("it reads tool calls only for tool_choice \"auto\", which needs "
                                     "enable_auto_tool_choice=true")
    if config.prefix_cache_rows and not config.enable_prefix_caching:
        found["prefix_cache_rows"] = "enable_prefix_caching is false, so no prefix cache is kept"
    if config.partition_schema not in (None, "optimum"):
        found["partition_schema"] = "djl-partition always writes the optimum-neuron layout"
    return found


def warn_inert_options(config: HandlerConfig, options: Mapping[str, object]) -> list[str]:
    """Log (and return) one warning per option that was set but has no effect."""
    messages = []
    for field, why in NO_EFFECT.items():
        if field in options and getattr(config, field) != HandlerConfig.model_fields[field].default:
            messages.append(f"{_origin(options, field)} is accepted for compatibility but has no effect in this "
                            f"handler" + (f": {why}" if why else ""))
    for field, why in inert_values(config).items():
        value = getattr(config, field)
        messages.append(f"{_origin(options, field)}={value} has no effect in this handler: {why}")
    tp = options.get("tensor_parallel_degree")
    if tp is not None and str(getattr(tp, "value", tp)).strip() == str(TP_FROM_RECOMMENDER):
        messages.append(f"{_origin(options, 'tensor_parallel_degree')}=0 is read as 1: DJL 0.28's config "
                        "recommender writes the number of CUDA GPUs (0 here) when none is configured; set a "
                        "positive number or max")
    for message in messages:
        logger.warning("%s", message)
    return messages


def _origin(options: Mapping[str, object], field: str) -> str:
    option = options.get(field)
    return getattr(option, "origin", None) or f"option.{field}"
