"""Hugging Face ids resolved from a pre-populated HF cache, offline."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from djl_python.artifacts import ArtifactError, Layout, SourceKind, classify_source, fetch_source, inspect_model_dir
from djl_python.artifacts.hf import allow_patterns
from tests.artifacts.layouts import SHA, populate_cache


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_cached_id_resolves_to_snapshot(offline_cache: Path, tiny_llama: Path) -> None:
    snapshot = populate_cache(offline_cache, "acme/tiny-llama", tiny_llama)
    assert fetch_source("acme/tiny-llama") == snapshot
    assert fetch_source("acme/tiny-llama", revision=SHA) == snapshot
    artifacts = inspect_model_dir(fetch_source("acme/tiny-llama"))
    assert (artifacts.layout, artifacts.model_type) == (Layout.HF, "llama")


def test_uncached_id_is_a_clear_error(offline_cache: Path) -> None:
    with pytest.raises(ArtifactError, match=r"'acme/not-cached' is not in the local cache .*HF_HUB_OFFLINE"):
        fetch_source("acme/not-cached")


def test_uncached_revision_is_a_clear_error(offline_cache: Path, tiny_llama: Path) -> None:
    populate_cache(offline_cache, "acme/tiny-llama", tiny_llama)
    with pytest.raises(ArtifactError, match="'acme/tiny-llama' at revision 'v2'"):
        fetch_source("acme/tiny-llama", revision="v2")


@pytest.mark.parametrize(
    ("uri", "kind"),
    [("acme/model", SourceKind.HF_HUB), ("gpt2", SourceKind.HF_HUB), ("s3://b/p", SourceKind.S3)],
)
def test_classify(uri: str, kind: SourceKind) -> None:
    assert classify_source(uri) is kind


def test_existing_local_path_wins_over_id_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert classify_source("org/name") is SourceKind.LOCAL
    assert fetch_source("org/name") == (tmp_path / "org" / "name").resolve()


@pytest.mark.parametrize("uri", ["/no/such/folder", "./missing", "http://example.com/m", "a b", "org/x/y", ""])
def test_unusable_sources(uri: str) -> None:
    with pytest.raises(ArtifactError):
        classify_source(uri)


def test_allow_patterns_select_model_files_only() -> None:
    repo = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
        "special_tokens_map.json", "chat_template.jinja", "model-00001-of-00002.safetensors",
        "model.safetensors.index.json", "pytorch_model.bin", "qwen.tiktoken", "modeling_custom.py",
        "model.Q4_0.gguf", "onnx/model.onnx", "README.md", "images/logo.png",
    ]

    def fetched(trust: bool) -> set[str]:
        return {f for f in repo if any(fnmatch.fnmatch(f, p) for p in allow_patterns(trust))}

    assert fetched(False) == set(repo[:11])
    assert fetched(True) == set(repo[:12])
