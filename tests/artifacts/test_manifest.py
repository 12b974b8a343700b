"""``djl_manifest.json``: write, read, check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from djl_python.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    check_manifest,
    inspect_model_dir,
    read_manifest,
    write_manifest,
)
from tests.artifacts.layouts import write_neffs

COMPILE_CONFIG = {
    "tp_degree": 2,
    "batch_size": 4,
    "n_positions": 512,
    "amp": "f16",
    "context_length_estimate": (128, 256),
    "quantize": None,
    "continuous_batching": True,
    "attention_layout": "BSH",
    "fuse_qkv": True,
    "group_query_attention": "shard-over-heads",
}


def test_round_trip(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "compiled", backend="transformers-neuronx", compile_config=COMPILE_CONFIG)
    assert path == tmp_path / "compiled" / MANIFEST_NAME
    assert [p.name for p in path.parent.iterdir()] == [MANIFEST_NAME]  # no temporary file left behind
    manifest = read_manifest(tmp_path / "compiled")
    assert manifest is not None and manifest.backend == "transformers-neuronx"
    assert manifest.compile_config["context_length_estimate"] == [128, 256]
    assert manifest.compile_config["quantize"] is None
    assert {"djl_python", "transformers", "torch"} <= manifest.versions.keys()
    assert manifest.created_at
    check_manifest(manifest, COMPILE_CONFIG)  # identical settings (tuple == list) pass


def test_every_mismatch_is_listed(tmp_path: Path) -> None:
    write_manifest(tmp_path, backend="transformers-neuronx", compile_config=COMPILE_CONFIG,
                   compiler_version="2.13.66.0", versions={"transformers": "4.36.2"})
    manifest = read_manifest(tmp_path)
    assert manifest.compiler_version == "2.13.66.0" and manifest.versions == {"transformers": "4.36.2"}
    expected = dict(COMPILE_CONFIG, tp_degree=8, context_length_estimate=[512], unroll=4)
    check_manifest(manifest, COMPILE_CONFIG, compiler_version="2.14.1.0")  # an older compiler's graphs load
    with pytest.raises(ArtifactError) as info:
        check_manifest(manifest, expected, compiler_version="2.12.0.0", where=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and "mismatch" in message
    assert "tp_degree: compiled 2, configured 8" in message
    assert "context_length_estimate: compiled [128, 256], configured [512]" in message
    assert "unroll: compiled '<not recorded>', configured 4" in message
    assert "compiler_version (newer than installed): compiled '2.13.66.0', configured '2.12.0.0'" in message
    assert "batch_size" not in message


def test_missing_and_malformed(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"backend": "x"}))
    with pytest.raises(ArtifactError, match="cannot read compile manifest .*compile_config"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read compile manifest"):
        read_manifest(tmp_path)


def test_unserialisable_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="compile_config is not JSON-serialisable"):
        write_manifest(tmp_path, backend="x", compile_config={"dtype": object()})
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_layout_carries_the_manifest_of_its_graphs(tiny_llama: Path, tmp_path: Path) -> None:
    graphs = write_neffs(tmp_path / "graphs")
    write_manifest(graphs, backend="transformers-neuronx", compile_config={"tp_degree": 2})
    art = inspect_model_dir(tiny_llama, compiled_dir=graphs)
    assert art.manifest is not None and art.manifest.compile_config == {"tp_degree": 2}


def test_another_transformers_neuronx_release_is_refused(tmp_path: Path) -> None:
    """The manifest compares the transformers-neuronx version, not only the settings."""
    write_manifest(tmp_path, backend="neuron", compile_config=COMPILE_CONFIG,
                   versions={"transformers-neuronx": "0.10.0.332"})
    manifest = read_manifest(tmp_path)
    check_manifest(manifest, COMPILE_CONFIG, tnx_version="0.10.0.332")
    with pytest.raises(ArtifactError, match="transformers-neuronx: compiled '0.10.0.332', configured '0.13.322'"):
        check_manifest(manifest, COMPILE_CONFIG, tnx_version="0.13.322")
