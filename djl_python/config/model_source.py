"""Which model a standalone server runs, and which source chose it.

The rule (``choose_model``), in order:

1. a model id (``MODEL``/``--model``, ``option.model_id``, ``OPTION_MODEL_ID``,
   ``HF_MODEL_ID``, a remote ``SERVING_LOAD_MODELS`` URL) is the model; one that is
   written as a local path (``/…``, ``./…``, ``~/…``) must exist;
2. a model folder (``--model-dir``, ``OPTION_MODEL_DIR``, a local
   ``SERVING_LOAD_MODELS`` entry) must exist. If it holds model files it is the
   model; if it holds only a ``serving.properties`` (options, no model), no model
   is configured and rule 3 applies; an empty folder is an error;
3. with no model configured anywhere, the embedded default model
   (SmolLM2-135M-Instruct).

A folder that is wrong or empty is an error naming the key that pointed to it,
never a silent switch to the default model. This is an explicit file-system
step, run once at start-up; validators stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from djl_python.config.errors import ConfigError, ConfigProblem
from djl_python.config.handler_config import HandlerConfig

MODEL_FILES = ("config.json", "*.safetensors", "*.bin", "*.pt", "*.gguf")
PROPERTIES_FILE = "serving.properties"
# Where a model can be named, for the message that says none was.
MODEL_KEYS = ("MODEL/--model", "--model-dir", "option.model_id", "OPTION_MODEL_ID", "HF_MODEL_ID", "SERVING_LOAD_MODELS")


@dataclass(frozen=True)
class ModelChoice:
    """``config`` pointing at the model to serve, and a sentence saying who chose it."""

    config: HandlerConfig
    source: str
    is_default: bool = False


def has_model_files(folder: str | Path | None) -> bool:
    """Whether ``folder`` holds a model (not just a ``serving.properties``)."""
    if not folder or not Path(folder).is_dir():
        return False
    return any(any(Path(folder).glob(pattern)) for pattern in MODEL_FILES)


def _looks_local(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or model_id in (".", "..")


def choose_model(config: HandlerConfig, default_dir: Callable[[], Path]) -> ModelChoice:
    """Apply the rule of the module docstring. ``default_dir()`` prepares the default model
    and is called only when rule 3 applies. Raises ``ConfigError`` naming the key."""
    if config.model_id:
        key = config.origin("model_id")
        if _looks_local(config.model_id) and not Path(config.model_id).expanduser().exists():
            raise ConfigError([ConfigProblem(key, config.model_id, "no such file or folder")])
        return ModelChoice(config, f"{key}={config.model_id}")
    if config.model_dir:
        key = config.origin("model_dir")
        folder = Path(config.model_dir).expanduser()
        if not folder.is_dir():
            why = "is not a folder" if folder.exists() else "no such folder"
            raise ConfigError([ConfigProblem(key, config.model_dir, why)])
        if has_model_files(folder):
            return ModelChoice(config, f"model files in {key}={config.model_dir}")
        if not (folder / PROPERTIES_FILE).is_file():
            raise ConfigError([ConfigProblem(
                key, config.model_dir,
                f"holds no model ({', '.join(MODEL_FILES)}) and no {PROPERTIES_FILE} naming one; "
                "pass a model folder, or set option.model_id",
            )])
        none_there = f"{folder / PROPERTIES_FILE} names no model and {key} holds no model files"
    else:
        none_there = "no model configured"
    default = default_dir()
    source = f"the default model ({none_there}; name one with {', '.join(MODEL_KEYS)})"
    return ModelChoice(config.model_copy(update={"model_id": str(default)}), source, is_default=True)
