"""Which of the supported layouts a local model folder is, as one frozen description.

Detection is from the files alone (no network, nothing loaded):

* ``OPTIMUM_NEURON``: ``config.json`` with a ``neuron`` block, ``checkpoint/``
  (safetensors or split weights) and ``compiled/`` (neffs).
* ``COMPILED_ONLY``: ``config.json`` with a ``neuron`` block and ``compiled/``
  but no ``checkpoint/``; the weights are top-level HF files or, for
  optimum-neuron ≥ 0.0.24 exports, fetched from ``neuron.checkpoint_id``
  (the caller passes that folder as ``checkpoint_dir``).
  A ``compiled/`` whose ``config.json`` says ``is_presharded_checkpoint`` (DJL's
  partitioned folder: transformers-neuronx ``save(dir, sharded_weights=True)``,
  djl-serving afece25d ``TNXModelLoader.compile_and_save``) holds the weights
  itself: ``checkpoint_dir`` is ``compiled/`` and ``presharded`` is set.
* ``SPLIT``: ``pytorch_model.bin`` is a *directory* (``save_pretrained_split``);
  its graphs come from ``compiled_graph_path``.
* ``HF``: a standard Hugging Face folder (safetensors or bin, whole or sharded).

The checks that refuse a folder (GGUF, no ``config.json``, custom code not
trusted, incomplete shards) name what was found and what is expected.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from djl_python.artifacts.compiled import CompiledFormat, detect_compiled, require_graphs
from djl_python.artifacts.errors import ArtifactError
from djl_python.artifacts.manifest import Manifest, read_manifest
from djl_python.artifacts.weights import WeightFormat, Weights, detect_weights

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoint"
COMPILED_SUBDIR = "compiled"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class Layout(str, Enum):
    """The shape of a model folder (see the module docstring)."""

    HF = "hf"
    OPTIMUM_NEURON = "optimum_neuron"
    SPLIT = "split"
    COMPILED_ONLY = "compiled_only"


@dataclass(frozen=True)
class ModelArtifacts:
    """Everything a backend needs to know about the model on disk.

    Invariants: ``model_dir`` holds ``config.json`` and the tokenizer;
    ``checkpoint_dir`` holds the weights in ``weight_format``; ``compiled_dir``
    is None or an existing folder (``compiled_format`` says what is in it).
    ``hf_config`` is the parsed ``config.json`` and must be treated as read-only.
    ``adopted`` holds configuration values taken from the compiled artifacts
    because the configuration left them unset (option name → value).
    """

    model_dir: Path
    layout: Layout
    checkpoint_dir: Path
    compiled_dir: Path | None
    compiled_format: CompiledFormat | None
    model_type: str
    hf_config: dict[str, Any]
    weight_format: WeightFormat
    sharded: bool
    has_custom_code: bool
    neuron_block: dict[str, Any] | None
    manifest: Manifest | None
    adopted: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    presharded: bool = False  # checkpoint_dir holds transformers-neuronx presharded weights


def read_hf_config(model_dir: Path) -> dict[str, Any]:
    """Parse ``model_dir/config.json``; refuses GGUF and folders without one, saying what was found."""
    if model_dir.is_file():
        if model_dir.suffix == ".gguf":
            raise ArtifactError(
                f"found {model_dir.name}: GGUF is not supported; convert it to a Hugging Face "
                "safetensors folder (config.json, tokenizer files, *.safetensors)"
            )
        raise ArtifactError(f"{model_dir} is a file; expected a model folder holding config.json")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        present = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        ggufs = [name for name in present if name.endswith(".gguf")]
        if ggufs:
            reason = f"found {ggufs[0]}; GGUF is not supported: convert it to a Hugging Face safetensors folder"
        elif any(name.endswith(".neff") or name.startswith("neuronxcc-") for name in present):
            reason = ("found only compiled graphs: pass this folder as option.compiled_graph_path "
                      "and the Hugging Face checkpoint as option.model_id")
        else:
            reason = f"found {present[:8] or 'nothing'}"
        raise ArtifactError(f"no config.json in {model_dir} ({reason}); expected a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot parse {config_file}: {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ArtifactError(f"{config_file} has no 'model_type'; expected a transformers model config")
    return config


def inspect_model_dir(
    model_dir: Path,
    *,
    trust_remote_code: bool = False,
    compiled_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    source: str | None = None,
) -> ModelArtifacts:
    """Describe the local folder ``model_dir``; raises ``ArtifactError`` for an unusable one.

    ``compiled_dir`` is the (already local, writable) ``compiled_graph_path``;
    a ``compiled/`` subfolder takes precedence over it, as in DJL.
    ``checkpoint_dir`` is where a ``COMPILED_ONLY`` model's weights were fetched.
    """
    hf_config = read_hf_config(model_dir)
    has_custom_code = _check_custom_code(model_dir, hf_config, trust_remote_code)
    block = hf_config.get("neuron")
    if block is not None and not isinstance(block, dict):
        raise ArtifactError(f"'neuron' in {model_dir / 'config.json'} must be an object, got {block!r}")
    own_compiled = model_dir / COMPILED_SUBDIR
    own_checkpoint = model_dir / CHECKPOINT_SUBDIR

    if block is not None and own_compiled.is_dir():
        compiled_format = require_graphs(own_compiled, "compiled/ folder")
        if compiled_dir is not None:
            logger.warning("ignoring compiled_graph_path %s: the model ships its own %s", compiled_dir, own_compiled)
        compiled_dir = own_compiled
        presharded = _is_presharded(own_compiled)
        if own_checkpoint.is_dir():
            layout, weights_dir = Layout.OPTIMUM_NEURON, own_checkpoint
        elif presharded:
            layout, weights_dir = Layout.COMPILED_ONLY, own_compiled
        else:
            layout, weights_dir = Layout.COMPILED_ONLY, checkpoint_dir or model_dir
    else:
        presharded = False
        if block is not None and own_checkpoint.is_dir():
            raise ArtifactError(
                f"{model_dir} has a neuron block and checkpoint/ but no compiled/ folder; "
                "expected an optimum-neuron export with both"
            )
        compiled_format = detect_compiled(compiled_dir) if compiled_dir is not None else None
        weights_dir = model_dir
        layout = Layout.HF

    weights = (Weights(WeightFormat.PRESHARDED, False) if presharded and layout is Layout.COMPILED_ONLY
               else _require_weights(weights_dir, layout, block))
    if layout is Layout.HF and weights.format is WeightFormat.SPLIT:
        layout = Layout.SPLIT
        if compiled_dir is None:
            logger.warning("split model %s has no compiled_graph_path: its graphs will be compiled at load", model_dir)
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        logger.warning(
            "no tokenizer files (%s) in %s; loading the tokenizer will fail", ", ".join(TOKENIZER_FILES), model_dir
        )
    manifest = read_manifest(compiled_dir) if compiled_dir is not None else None
    return ModelArtifacts(
        model_dir=model_dir,
        layout=layout,
        checkpoint_dir=weights_dir,
        compiled_dir=compiled_dir,
        compiled_format=compiled_format,
        model_type=hf_config["model_type"],
        hf_config=hf_config,
        weight_format=weights.format,
        sharded=weights.sharded,
        has_custom_code=has_custom_code,
        neuron_block=block,
        manifest=manifest or read_manifest(model_dir),
        source=source,
        presharded=presharded and layout is Layout.COMPILED_ONLY,
    )


def _is_presharded(compiled: Path) -> bool:
    """transformers-neuronx 1ade6d7 ``save(dir, sharded_weights=True)`` writes ``config.json`` with this flag."""
    path = compiled / "config.json"
    try:
        return path.is_file() and bool(json.loads(path.read_text()).get("is_presharded_checkpoint"))
    except (OSError, ValueError, AttributeError):
        return False


def _require_weights(folder: Path, layout: Layout, block: dict[str, Any] | None) -> Weights:
    weights = detect_weights(folder)
    if weights is not None:
        return weights
    hint = ""
    if layout is Layout.COMPILED_ONLY and block and block.get("checkpoint_id"):
        hint = f" (the export names checkpoint_id={block['checkpoint_id']!r}; it was not fetched)"
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ggufs:
        hint += f"; found {ggufs[0]}: GGUF is not supported, convert it to a Hugging Face safetensors folder"
    raise ArtifactError(
        f"no model weights in {folder}{hint}; expected *.safetensors (with an index when sharded), "
        "pytorch_model.bin, or a split pytorch_model.bin/ directory with key_to_filename.json"
    )


def _check_custom_code(model_dir: Path, hf_config: dict[str, Any], trust_remote_code: bool) -> bool:
    """Whether the folder ships its own modelling code; refused unless trusted or not needed.

    Code is *needed* when ``model_type`` is unknown to the installed
    transformers; otherwise transformers uses its built-in implementation and
    the shipped code is ignored (with a warning) unless ``trust_remote_code`` is on.
    """
    scripts = sorted(p.name for p in model_dir.glob("*.py"))
    auto_map = hf_config.get("auto_map")
    if not scripts and not auto_map:
        return False
    if trust_remote_code:
        return True
    found = ", ".join(filter(None, ["auto_map in config.json" if auto_map else "", ", ".join(scripts)]))
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if hf_config["model_type"] in CONFIG_MAPPING_NAMES:
        logger.warning(
            "%s ships custom code (%s) that is ignored: trust_remote_code is off and transformers "
            "has a built-in '%s' implementation", model_dir, found, hf_config["model_type"])
        return True
    raise ArtifactError(
        f"{model_dir} needs custom modelling code (found {found}; model_type "
        f"{hf_config['model_type']!r} is not built into transformers); set option.trust_remote_code=true "
        "(OPTION_TRUST_REMOTE_CODE=true) if you trust it"
    )
