"""``HandlerConfig`` → ``ModelArtifacts``: the one call the loader makes.

For a compiled layout the neuron block is checked against the options the user set
(``config.model_fields_set``); what was left unset is returned as ``adopted``, which
``backends.dispatch.load_backend`` merges into the configuration once.
"""

from __future__ import annotations

import dataclasses
import logging
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from djl_python.artifacts.errors import ArtifactError
from djl_python.artifacts.layout import (
    CHECKPOINT_SUBDIR,
    COMPILED_SUBDIR,
    Layout,
    ModelArtifacts,
    inspect_model_dir,
    read_hf_config,
)
from djl_python.artifacts.neuron_block import check_neuron_block
from djl_python.artifacts.sources import DEFAULT_WRITABLE_COMPILE_CACHE, fetch_compiled_graphs, fetch_source
from djl_python.artifacts.weights import detect_weights

if TYPE_CHECKING:
    from djl_python.config import HandlerConfig

logger = logging.getLogger(__name__)


def resolve_artifacts(
    config: HandlerConfig,
    *,
    cache_dir: Path | str | None = None,
    writable_compile_cache: Path = DEFAULT_WRITABLE_COMPILE_CACHE,
) -> ModelArtifacts:
    """Fetch the model (and its compiled graphs) named by ``config`` and describe them.

    For compiled layouts the ``neuron`` block is validated against the
    configuration; values the configuration left unset are returned in
    ``ModelArtifacts.adopted``. Raises ``ArtifactError`` (naming the source)
    for anything unusable, before any weight is read.
    """
    uri = config.model_id_or_path
    if not uri:
        raise ArtifactError("no model given: set option.model_id (HF id, s3:// url or local folder)")
    trust = bool(config.trust_remote_code)
    model_dir = fetch_source(uri, revision=config.revision, trust_remote_code=trust, cache_dir=cache_dir)

    compiled_dir = None
    if config.compiled_graph_path:
        compiled_dir = fetch_compiled_graphs(config.compiled_graph_path, cache_dir=cache_dir, writable_fallback=writable_compile_cache)

    artifacts = inspect_model_dir(
        model_dir,
        trust_remote_code=trust,
        compiled_dir=compiled_dir,
        checkpoint_dir=_remote_checkpoint(model_dir, trust, cache_dir),
        source=uri,
    )
    if config.load_split_model and artifacts.layout is not Layout.SPLIT:
        logger.info("load_split_model is set but %s is a %s layout; loading it as such", uri, artifacts.layout.value)
    if artifacts.neuron_block is not None and artifacts.layout in (Layout.OPTIMUM_NEURON, Layout.COMPILED_ONLY):
        adopted = _check_block(config, artifacts.neuron_block, artifacts.model_dir)
        if artifacts.presharded and config.on_device_embedding is None and config.on_device_embedding_config is None:
            # LMI's smart default for a config.json with a neuron block (djl-serving afece25d
            # neuron_smart_default_utils.py:88-91), which its partitioned folders were compiled with;
            # presharded weights load only with it (transformers-neuronx 1ade6d7 base.py:43,101).
            adopted["on_device_embedding"] = True
        if adopted:
            logger.info("adopting settings of the compiled model: %s", adopted)
        artifacts = dataclasses.replace(artifacts, adopted=adopted)
    logger.info(
        "model %s: layout=%s model_type=%s weights=%s%s compiled=%s",
        uri, artifacts.layout.value, artifacts.model_type, artifacts.weight_format.value,
        " (sharded)" if artifacts.sharded else "", artifacts.compiled_dir,
    )
    return artifacts


def _remote_checkpoint(model_dir: Path, trust: bool, cache_dir: Path | str | None) -> Path | None:
    """The weights of an optimum-neuron export that left them on the Hub (``neuron.checkpoint_id``).

    Only for a folder with a neuron block and ``compiled/`` but neither
    ``checkpoint/`` nor top-level weights; fetched at ``checkpoint_revision``.
    """
    if not model_dir.is_dir() or not (model_dir / COMPILED_SUBDIR).is_dir() or (model_dir / CHECKPOINT_SUBDIR).exists():
        return None
    block = read_hf_config(model_dir).get("neuron")
    if not isinstance(block, dict) or not block.get("checkpoint_id") or detect_weights(model_dir) is not None:
        return None
    logger.info("fetching the weights of the compiled model from %s", block["checkpoint_id"])
    return fetch_source(
        str(block["checkpoint_id"]),
        revision=block.get("checkpoint_revision"),
        trust_remote_code=trust,
        cache_dir=cache_dir,
    )


def _check_block(config: HandlerConfig, block: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """Run ``check_neuron_block`` with the options the user set; defaults count as unset."""
    given = config.model_fields_set  # pydantic records which fields were given explicitly

    def explicit(name: str) -> Any:
        return getattr(config, name) if name in given else None

    tp = explicit("tensor_parallel_degree")
    return check_neuron_block(
        block,
        batch_size=explicit(config.slots_key),
        tensor_parallel_degree=None if tp in (None, "max") else int(tp),
        n_positions=config.n_positions,
        dtype=config.dtype,
        batch_size_key=config.slots_key,
        installed_compiler_version=_installed_neuronx_cc(),
        where=str(model_dir / "config.json"),
    )


def _installed_neuronx_cc() -> str | None:
    try:
        return metadata.version("neuronx-cc")
    except metadata.PackageNotFoundError:
        return None
