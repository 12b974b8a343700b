"""``resolve_artifacts`` driven by a real ``HandlerConfig``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from djl_python.artifacts import ArtifactError, CompiledFormat, Layout, WeightFormat, resolve_artifacts
from djl_python.config import load_config
from tests.artifacts.layouts import (
    add_neuron_block,
    neuron_block,
    populate_cache,
    write_neff_cache,
    write_neffs,
    write_optimum,
    write_split,
)


def config(**options: object):
    return load_config(None, properties={f"option.{k}": str(v) for k, v in options.items()}, env={})


def test_local_hf_model(tiny_llama: Path, tmp_path: Path) -> None:
    art = resolve_artifacts(config(model_id=tiny_llama), cache_dir=tmp_path)
    assert (art.layout, art.model_dir, art.source) == (Layout.HF, tiny_llama.resolve(), str(tiny_llama))
    assert art.adopted == {}


def test_split_model_with_compiled_graph_path(tiny_llama: Path, tmp_path: Path) -> None:
    write_split(tiny_llama, tmp_path / "split")
    graphs = write_neff_cache(tmp_path / "graphs")
    art = resolve_artifacts(
        config(model_id=tmp_path / "split", load_split_model="true", compiled_graph_path=graphs), cache_dir=tmp_path
    )
    assert (art.layout, art.weight_format) == (Layout.SPLIT, WeightFormat.SPLIT)
    assert (art.compiled_dir, art.compiled_format) == (graphs.resolve(), CompiledFormat.NEFF_CACHE)


def test_optimum_export_adopts_compiled_settings(tiny_llama: Path, tmp_path: Path) -> None:
    dest = write_optimum(tiny_llama, tmp_path / "optimum")
    art = resolve_artifacts(config(model_id=dest), cache_dir=tmp_path)
    assert art.layout is Layout.OPTIMUM_NEURON
    assert art.adopted == {
        "max_rolling_batch_size": 4, "tensor_parallel_degree": 2, "n_positions": 128, "dtype": "fp16"
    }


def test_optimum_export_mismatch_names_option_and_compiled_value(tiny_llama: Path, tmp_path: Path) -> None:
    dest = write_optimum(tiny_llama, tmp_path / "optimum")
    with pytest.raises(ArtifactError) as info:
        options = dict(max_rolling_batch_size=8, tensor_parallel_degree=2, n_positions=256)
        resolve_artifacts(config(model_id=dest, **options), cache_dir=tmp_path)
    message = str(info.value)
    assert "option.max_rolling_batch_size=8 but the compiled model has batch_size=4" in message
    assert "option.n_positions=256 but the compiled model has sequence_length=128" in message
    assert "tensor_parallel_degree" not in message


def test_static_batching_checks_batch_size(tiny_llama: Path, tmp_path: Path) -> None:
    dest = write_optimum(tiny_llama, tmp_path / "optimum")
    with pytest.raises(ArtifactError, match="option.batch_size=2 but the compiled model has batch_size=4"):
        resolve_artifacts(config(model_id=dest, rolling_batch="disable", batch_size=2), cache_dir=tmp_path)


def test_export_without_weights_fetches_checkpoint_id(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_cache = tmp_path / "hf"
    snapshot = populate_cache(hf_cache, "acme/tiny-llama", tiny_llama)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    dest = tmp_path / "export"
    dest.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_llama / name, dest / name)
    add_neuron_block(dest, neuron_block(checkpoint_id="acme/tiny-llama", checkpoint_revision=None))
    write_neffs(dest / "compiled")
    art = resolve_artifacts(config(model_id=dest), cache_dir=tmp_path)
    assert (art.layout, art.checkpoint_dir, art.model_dir) == (Layout.COMPILED_ONLY, snapshot, dest.resolve())
