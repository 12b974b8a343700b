"""Builders for every model layout the artifacts layer recognises, made from a tiny model.

The split layout is written here from its documented format (transformers-neuronx
``save_pretrained_split``), independently of the code under test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
NEFF_CACHE_VERSION = "2.13.66.0+6dfecc895"


def copy_metadata(src: Path, dest: Path) -> None:
    """config.json, generation_config.json and the tokenizer files, without weights."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def state_dict(src: Path) -> dict[str, torch.Tensor]:
    return load_file(str(src / "model.safetensors"))


def write_split(src: Path, dest: Path) -> dict[str, torch.Tensor]:
    """``dest/pytorch_model.bin/`` as a directory: key_to_filename.json + one torch.save per tensor."""
    copy_metadata(src, dest)
    tensors = state_dict(src)
    split = dest / "pytorch_model.bin"
    split.mkdir()
    mapping = {}
    for idx, (key, tensor) in enumerate(tensors.items()):
        name = f"p{idx}." + re.sub(r"[^-\w.]", "", key.replace(" ", "_"))
        torch.save(tensor.clone(), split / name)
        mapping[key] = name
    (split / "key_to_filename.json").write_text(json.dumps(mapping, indent=2))
    return tensors


def write_neffs(folder: Path, count: int = 3) -> Path:
    """A transformers-neuronx ``save()`` folder: ``<hash>.neff`` files (content is irrelevant)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i:020x}.neff").write_bytes(b"NEFF" + bytes([i]) * 16)
    return folder


def write_neff_cache(folder: Path) -> Path:
    """A dump of the Neuron persistent compile cache."""
    module = folder / f"neuronxcc-{NEFF_CACHE_VERSION}" / "MODULE_1234567890+abcdef"
    module.mkdir(parents=True)
    (module / "model.neff").write_bytes(b"NEFF")
    (module / "model.hlo_module.pb").write_bytes(b"HLO")
    (module / "compile_flags.json").write_text("[]")
    return folder


def neuron_block(**overrides: Any) -> dict[str, Any]:
    block = {
        "task": "text-generation",
        "batch_size": 4,
        "num_cores": 2,
        "auto_cast_type": "fp16",
        "sequence_length": 128,
        "compiler_type": "neuronx-cc",
        "compiler_version": "2.13.66.0+6dfecc895",
        "checkpoint_id": None,
        "checkpoint_revision": None,
    }
    block.update(overrides)
    return block


def add_neuron_block(folder: Path, block: dict[str, Any]) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["neuron"] = block
    config_file.write_text(json.dumps(config, indent=2))


def write_optimum(src: Path, dest: Path, *, block: dict[str, Any] | None = None, split: bool = False) -> Path:
    """An optimum-neuron export: config with a neuron block, checkpoint/ and compiled/."""
    copy_metadata(src, dest)
    add_neuron_block(dest, block or neuron_block())
    if split:
        write_split(src, dest / "checkpoint")
    else:
        copy_metadata(src, dest / "checkpoint")
        shutil.copy2(src / "model.safetensors", dest / "checkpoint" / "model.safetensors")
    write_neffs(dest / "compiled")
    return dest


# A commit id for hand-made Hugging Face cache entries.
SHA = "0123456789abcdef0123456789abcdef01234567"


def populate_cache(cache: Path, repo_id: str, model: Path, sha: str = SHA) -> Path:
    """Lay ``model`` out as huggingface_hub does: models--org--name/{snapshots/<sha>, refs/main}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / sha
    shutil.copytree(model, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot
