"""How many parameters a checkpoint holds, read from its files' headers (no weights are loaded).

Shared by both backends' memory plans. Pure reads of the folder; no torch.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Optional


def safetensors_parameters(path: Path) -> int:
    """Elements in a safetensors file, from its header alone (8-byte length + JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(meta["shape"]) for name, meta in header.items() if name != "__metadata__")


def checkpoint_parameters(model_dir: Path) -> Optional[int]:
    """Parameters in the safetensors files of ``model_dir``; None when it has none."""
    shards = sorted(Path(model_dir).glob("*.safetensors"))
    return sum(safetensors_parameters(p) for p in shards) if shards else None
