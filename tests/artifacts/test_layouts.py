"""Every supported layout built on disk from a tiny model, and the refused ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from djl_python.artifacts import (
    ArtifactError,
    CompiledFormat,
    Layout,
    WeightFormat,
    detect_compiled,
    inspect_model_dir,
    load_split_state_dict,
    read_split_index,
    split_filename,
)
from tests.artifacts.layouts import (
    add_neuron_block,
    copy_metadata,
    neuron_block,
    state_dict,
    write_neff_cache,
    write_neffs,
    write_optimum,
    write_split,
)


def test_standard_hf_safetensors(tiny_llama: Path) -> None:
    art = inspect_model_dir(tiny_llama)
    assert art.layout is Layout.HF
    assert art.model_dir == art.checkpoint_dir == tiny_llama
    assert (art.weight_format, art.sharded) == (WeightFormat.SAFETENSORS, False)
    assert art.model_type == "llama" and art.hf_config["num_hidden_layers"] == 2
    assert art.compiled_dir is None and art.compiled_format is None
    assert art.neuron_block is None and art.manifest is None and not art.has_custom_code


def test_sharded_safetensors_and_missing_shard(tiny_llama: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    dest = tmp_path / "sharded"
    model.save_pretrained(str(dest), max_shard_size="200KB")
    copy_metadata(tiny_llama, dest)
    shards = sorted(dest.glob("*.safetensors"))
    assert len(shards) > 1 and (dest / "model.safetensors.index.json").is_file()
    art = inspect_model_dir(dest)
    assert (art.layout, art.weight_format, art.sharded) == (Layout.HF, WeightFormat.SAFETENSORS, True)

    shards[-1].unlink()
    with pytest.raises(ArtifactError, match=f"incomplete.*{shards[-1].name}"):
        inspect_model_dir(dest)


def test_whole_pytorch_bin(tiny_llama: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    copy_metadata(tiny_llama, dest)
    torch.save(state_dict(tiny_llama), dest / "pytorch_model.bin")
    art = inspect_model_dir(dest)
    assert (art.layout, art.weight_format, art.sharded) == (Layout.HF, WeightFormat.BIN, False)


def test_split_model_with_neff_cache(tiny_llama: Path, tmp_path: Path) -> None:
    tensors = write_split(tiny_llama, tmp_path / "split")
    graphs = write_neff_cache(tmp_path / "graphs")
    art = inspect_model_dir(tmp_path / "split", compiled_dir=graphs)
    assert (art.layout, art.weight_format) == (Layout.SPLIT, WeightFormat.SPLIT)
    assert art.checkpoint_dir == tmp_path / "split"
    assert (art.compiled_dir, art.compiled_format) == (graphs, CompiledFormat.NEFF_CACHE)
    # The index we recognise is the one that loads: every tensor comes back intact.
    mapping = read_split_index(tmp_path / "split" / "pytorch_model.bin")
    assert mapping.keys() == tensors.keys()
    for key, name in mapping.items():
        assert torch.equal(torch.load(tmp_path / "split" / "pytorch_model.bin" / name), tensors[key])
    loaded = load_split_state_dict(tmp_path / "split" / "pytorch_model.bin")
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_split_filename_follows_save_pretrained_split() -> None:
    assert split_filename(0, "model.embed_tokens.weight") == "p0.model.embed_tokens.weight"
    assert split_filename(7, "a b/c:d-e.weight") == "p7.a_bcd-e.weight"


def test_split_directory_missing_tensor_or_index(tiny_llama: Path, tmp_path: Path) -> None:
    write_split(tiny_llama, tmp_path / "split")
    split_dir = tmp_path / "split" / "pytorch_model.bin"
    victim = sorted(split_dir.glob("p1.*"))[0]
    victim.unlink()
    with pytest.raises(ArtifactError, match=f"split checkpoint .* missing {victim.name}"):
        inspect_model_dir(tmp_path / "split")
    (split_dir / "key_to_filename.json").unlink()
    with pytest.raises(ArtifactError, match="holds no key_to_filename.json"):
        inspect_model_dir(tmp_path / "split")


@pytest.mark.parametrize("split", [False, True], ids=["safetensors-checkpoint", "legacy-split-checkpoint"])
def test_optimum_neuron_export(tiny_llama: Path, tmp_path: Path, split: bool) -> None:
    dest = write_optimum(tiny_llama, tmp_path / "optimum", split=split)
    art = inspect_model_dir(dest, compiled_dir=write_neffs(tmp_path / "ignored"))
    assert art.layout is Layout.OPTIMUM_NEURON
    assert art.checkpoint_dir == dest / "checkpoint"
    assert (art.compiled_dir, art.compiled_format) == (dest / "compiled", CompiledFormat.NEFF_FILES)
    assert art.weight_format is (WeightFormat.SPLIT if split else WeightFormat.SAFETENSORS)
    assert art.neuron_block == neuron_block()


def test_optimum_export_without_graphs_or_compiled_folder(tiny_llama: Path, tmp_path: Path) -> None:
    dest = write_optimum(tiny_llama, tmp_path / "optimum")
    for neff in (dest / "compiled").iterdir():
        neff.unlink()
    with pytest.raises(ArtifactError, match="compiled/ folder .* holds no compiled graphs"):
        inspect_model_dir(dest)
    shutil.rmtree(dest / "compiled")
    with pytest.raises(ArtifactError, match="neuron block and checkpoint/ but no compiled/"):
        inspect_model_dir(dest)


def test_compiled_only_with_top_level_weights(tiny_llama: Path, tmp_path: Path) -> None:
    dest = tmp_path / "compiled-only"
    shutil.copytree(tiny_llama, dest)
    add_neuron_block(dest, neuron_block())
    write_neffs(dest / "compiled")
    art = inspect_model_dir(dest)
    assert (art.layout, art.checkpoint_dir, art.compiled_dir) == (Layout.COMPILED_ONLY, dest, dest / "compiled")


def test_byo_compiled_graph_folders(tiny_llama: Path, tmp_path: Path) -> None:
    neffs = write_neffs(tmp_path / "neffs")
    art = inspect_model_dir(tiny_llama, compiled_dir=neffs)
    assert (art.layout, art.compiled_dir, art.compiled_format) == (Layout.HF, neffs, CompiledFormat.NEFF_FILES)
    assert detect_compiled(write_neff_cache(tmp_path / "cache")) is CompiledFormat.NEFF_CACHE
    (tmp_path / "empty").mkdir()
    assert detect_compiled(tmp_path / "empty") is CompiledFormat.EMPTY


def test_gguf_is_refused(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ArtifactError, match="found model.gguf: GGUF is not supported.*safetensors"):
        inspect_model_dir(gguf)
    with pytest.raises(ArtifactError, match="found model.gguf; GGUF is not supported"):
        inspect_model_dir(tmp_path)


def test_folder_without_config_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"no config.json in .*weights.safetensors.*Hugging Face model folder"):
        inspect_model_dir(tmp_path)
    neffs = write_neffs(tmp_path / "graphs")
    with pytest.raises(ArtifactError, match="compiled_graph_path"):
        inspect_model_dir(neffs)


def test_config_without_weights(tiny_llama: Path, tmp_path: Path) -> None:
    copy_metadata(tiny_llama, tmp_path / "m")
    with pytest.raises(ArtifactError, match="no model weights in .*expected \\*.safetensors"):
        inspect_model_dir(tmp_path / "m")


def _with_custom_code(src: Path, dest: Path, model_type: str) -> Path:
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "modeling_custom.py").write_text("class CustomForCausalLM: ...\n")
    return dest


def test_custom_code_needs_trust_remote_code(tiny_llama: Path, tmp_path: Path) -> None:
    dest = _with_custom_code(tiny_llama, tmp_path / "custom", "acme_custom_lm")
    with pytest.raises(ArtifactError, match="auto_map in config.json, modeling_custom.py.*trust_remote_code=true"):
        inspect_model_dir(dest)
    art = inspect_model_dir(dest, trust_remote_code=True)
    assert art.has_custom_code and art.model_type == "acme_custom_lm"


def test_custom_code_for_a_builtin_architecture_is_ignored(tiny_llama: Path, tmp_path: Path) -> None:
    # transformers itself uses its built-in class here when remote code is not trusted.
    art = inspect_model_dir(_with_custom_code(tiny_llama, tmp_path / "custom", "llama"))
    assert art.has_custom_code and art.layout is Layout.HF
