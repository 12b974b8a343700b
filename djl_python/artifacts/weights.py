"""Which weight files a checkpoint folder holds, checked for completeness.

The search order is transformers-neuronx's (0.10+): single or sharded
safetensors, then the split directory, then ``pytorch_model.bin`` (single or
sharded). A sharded checkpoint's index must name only shards that exist, and a
split directory's ``key_to_filename.json`` only files that exist, so a partial
copy is reported here rather than half way through loading.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from djl_python.artifacts.errors import ArtifactError

SPLIT_DIR = "pytorch_model.bin"
SPLIT_INDEX = "key_to_filename.json"
_SANITIZE = re.compile(r"[^-\w.]")


class WeightFormat(str, Enum):
    """How the weights are stored."""

    SAFETENSORS = "safetensors"
    BIN = "bin"
    SPLIT = "split"  # transformers-neuronx save_pretrained_split: one torch.save file per tensor
    PRESHARDED = "presharded"  # transformers-neuronx save(dir, sharded_weights=True): per-rank shards


@dataclass(frozen=True)
class Weights:
    """The weights found in one folder."""

    format: WeightFormat
    sharded: bool


def split_filename(index: int, key: str) -> str:
    """The file name ``save_pretrained_split`` gives state-dict entry ``index`` named ``key``.

    Spaces become ``_`` and characters outside ``[-\\w.]`` are dropped, behind a
    ``p{index}.`` prefix that keeps names unique.
    """
    return f"p{index}." + _SANITIZE.sub("", key.replace(" ", "_"))


def read_split_index(split_dir: Path) -> dict[str, str]:
    """The ``key -> file name`` map of a split directory, checked against the files present."""
    index_file = split_dir / SPLIT_INDEX
    if not index_file.is_file():
        raise ArtifactError(
            f"{split_dir} is a directory but holds no {SPLIT_INDEX}: expected a transformers-neuronx "
            "save_pretrained_split folder (or a pytorch_model.bin file)"
        )
    try:
        mapping = json.loads(index_file.read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot read {index_file}: {err}") from err
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ArtifactError(f"{index_file} must map each state-dict key to a file name")
    missing = sorted(name for name in set(mapping.values()) if not (split_dir / name).is_file())
    if missing:
        raise ArtifactError(f"split checkpoint {split_dir} is incomplete: missing {_preview(missing)}")
    return mapping


def load_split_state_dict(split_dir: Path) -> dict[str, Any]:
    """Load a split directory into a state dict (``key -> torch.Tensor``), e.g. for a CPU backend.

    Only tensors are accepted (``torch.load(weights_only=True)``): a split
    folder from an untrusted source cannot run code on load.
    """
    import torch

    return {
        key: torch.load(split_dir / name, map_location="cpu", weights_only=True)
        for key, name in read_split_index(split_dir).items()
    }


def detect_weights(folder: Path) -> Weights | None:
    """The weights in ``folder`` (not its subfolders), or None when there are none.

    Raises ``ArtifactError`` when an index names shards that are not there.
    """
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return Weights(WeightFormat.SAFETENSORS, _check_index(folder, "safetensors", len(safetensors)))
    split = folder / SPLIT_DIR
    if split.is_dir():
        read_split_index(split)
        return Weights(WeightFormat.SPLIT, sharded=False)
    if split.is_file():
        return Weights(WeightFormat.BIN, sharded=False)
    if (folder / f"{SPLIT_DIR}.index.json").is_file():
        return Weights(WeightFormat.BIN, _check_index(folder, "bin", 0))
    return None


def _check_index(folder: Path, suffix: str, count: int) -> bool:
    """True when ``folder`` holds a sharded checkpoint whose every shard is present."""
    indexes = sorted(folder.glob(f"*.{suffix}.index.json"))
    if not indexes:
        # Several files with no index and no model.safetensors cannot be put together.
        if suffix == "safetensors" and count > 1 and not (folder / "model.safetensors").is_file():
            names = ", ".join(p.name for p in sorted(folder.glob("*.safetensors"))[:5])
            raise ArtifactError(
                f"{folder} holds {count} safetensors files ({names}) but no *.safetensors.index.json "
                "to say how they fit together"
            )
        return False
    index = indexes[0]
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = set(weight_map.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ArtifactError(f"cannot read shard index {index}: expected a 'weight_map' object ({err})") from err
    missing = sorted(name for name in shards if not (folder / name).is_file())
    if missing:
        raise ArtifactError(
            f"sharded checkpoint {folder} is incomplete: {index.name} lists missing {_preview(missing)}"
        )
    return True


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
