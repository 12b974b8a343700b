"""``transformers_neuronx.module``: ``PretrainedModel.from_pretrained`` and the checkpoints it reads.

Per release (``module.py`` at each commit of ``_versions.py``):

* 0.8 (90c7199): ``pytorch_model.bin`` only, a file (``torch.load``) or a split
  directory (``key_to_filename.json``);
* 0.9 (8b01968): ``model.safetensors``, else that ``pytorch_model.bin`` (dir or file),
  else ``FileNotFoundError``; sharded checkpoints (``*.index.json``) are not read;
* 0.10+ (7a30b42 on): also sharded safetensors / bin via their index;
* 0.13 (1ade6d7): a folder whose ``config.json`` says ``is_presharded_checkpoint``
  is loaded as presharded weights (written by ``save(dir, sharded_weights=True)``).

``_sanity_check`` (the asserts ``from_pretrained`` runs on its kwargs) follows
each release: see :func:`sanity_check`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers import AutoConfig

from transformers_neuronx._double import RELEASE, record

PRESHARDED_FILE = "double-presharded.pt"  # the double's stand-in for TNX's per-rank weight files


def _is_bsh(layout: Any) -> bool:
    return layout is not None and (getattr(layout, "value", layout) == "BSH")


def sanity_check(kwargs: dict[str, Any]) -> None:
    cle = kwargs.get("context_length_estimate")
    n_positions = kwargs.get("n_positions", 2048)
    nc = kwargs.get("neuron_config")
    cb = nc is not None and getattr(nc, "continuous_batching", None)
    bsh = nc is not None and _is_bsh(getattr(nc, "cache_layout", None)) and RELEASE.sanity != "cb-single-equal"
    rule = RELEASE.sanity
    if rule == "none":
        return
    if rule.endswith("+max") and isinstance(cle, list) and isinstance(n_positions, (list, int)):
        max_n = max(n_positions) if isinstance(n_positions, list) else n_positions
        assert max_n >= max(cle), f"Max context_length_estimate {max(cle)} cannot be more than max n_positions {max_n}."
    if cb:
        shared = nc.continuous_batching.batch_size_for_shared_caches
        assert shared == kwargs.get("batch_size"), (
            f"invalid batch_size_for_shared_caches ({shared}), {kwargs.get('batch_size')} is expected")
        if rule.startswith("cb-single-equal"):  # 8b01968 / 7a30b42
            assert isinstance(cle, list) and len(cle) == 1
            assert isinstance(n_positions, list) and len(n_positions) == 1
            assert cle == n_positions, \
                "To use continuous batching features, context length estimate should equal to n_positions."
        elif rule.startswith("cb-npos-single"):  # 0623de2
            assert isinstance(n_positions, list) and len(n_positions) == 1
            if bsh:
                assert isinstance(cle, list) and len(cle) == 1, "BSH cache layout does not support multi-bucketing"
        elif bsh:  # c8d6bdc / 1ade6d7
            assert isinstance(n_positions, list) and len(n_positions) == 1
            assert isinstance(cle, list) and len(cle) == 1, "BSH cache layout does not support multi-bucketing"
    elif bsh:
        raise AssertionError("BSH cache layout can only be configured with continuous batching.")


def checkpoint_format(path: str) -> str:
    """Which weights this release would read from ``path``, or the error it raises."""
    bin_path = os.path.join(path, "pytorch_model.bin")
    st_path = os.path.join(path, "model.safetensors")
    formats = RELEASE.checkpoint_formats
    if "safetensors" in formats and os.path.isfile(st_path):
        return "safetensors"
    if os.path.isdir(bin_path):
        return "bin-dir"
    if os.path.isfile(bin_path):
        return "bin"
    if "sharded" in formats and any(os.path.isfile(os.path.join(path, f"{name}.index.json"))
                                    for name in ("model.safetensors", "pytorch_model.bin")):
        return "sharded"
    if RELEASE.label == "0.8":
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{bin_path}'")  # torch.load
    if "sharded" in formats:
        raise OSError(f"Error no file named model.safetensors or pytorch_model.bin found in {path}")
    raise FileNotFoundError(f"Can not find model.safetensors or pytorch_model.bin in {path}")


class PretrainedModel:
    """Base of every model class: ``from_pretrained`` binds (the double: records) the weights."""

    checkpoint: str | None = None
    weights_format: str | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_path: str, *model_args: Any, **kwargs: Any) -> PretrainedModel:
        sanity_check(kwargs)
        config = AutoConfig.from_pretrained(pretrained_model_path)
        presharded = RELEASE.presharded and getattr(config, "is_presharded_checkpoint", False)
        model = cls(config, *model_args, **kwargs)
        if presharded:
            fmt = "presharded"
            if not os.path.isfile(os.path.join(pretrained_model_path, PRESHARDED_FILE)):
                raise FileNotFoundError(f"no presharded weights in {pretrained_model_path}")
        else:
            fmt = checkpoint_format(pretrained_model_path)
        model.checkpoint, model.weights_format = pretrained_model_path, fmt
        record("from_pretrained", cls.__name__, pretrained_model_path, dict(kwargs))
        return model


def read_split_dir(state_dict_dir: str) -> dict[str, Any]:
    """A ``pytorch_model.bin/`` split directory: ``key_to_filename.json`` + one ``torch.save`` per tensor."""
    import torch

    with open(os.path.join(state_dict_dir, "key_to_filename.json")) as f:
        key_to_filename = json.load(f)
    return {k: torch.load(os.path.join(state_dict_dir, v), weights_only=True) for k, v in key_to_filename.items()}
