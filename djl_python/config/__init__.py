"""Handler configuration: ``serving.properties`` + ``OPTION_*`` -> one immutable ``HandlerConfig``.

    config = load_config("/opt/ml/model")     # ConfigError lists every bad key
    apply_environment(config)                 # NEURON_CC_FLAGS, NEURON_COMPILE_CACHE_URL

Modules: ``sources`` (where values come from, precedence), ``lmi`` and ``tnx``
(the option models), ``handler_config`` (the merged model), ``errors``,
``environment`` (the only place that writes environment variables), ``load``.
"""

from djl_python.config.environment import apply_environment, environment_changes
from djl_python.config.errors import ConfigError, ConfigProblem
from djl_python.config.handler_config import HandlerConfig
from djl_python.config.load import load_config, validate_options
from djl_python.config.tnx import load_on_device_embedding_config

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "HandlerConfig",
    "apply_environment",
    "environment_changes",
    "load_config",
    "load_on_device_embedding_config",
    "validate_options",
]
