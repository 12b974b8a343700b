"""Local sources and the compile-cache folder (including SageMaker's read-only mount)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from djl_python.artifacts import ArtifactError, default_cache_dir, fetch_compiled_graphs, fetch_source
from djl_python.artifacts import sources
from tests.artifacts.layouts import write_neff_cache, write_neffs


def test_local_folder_is_used_in_place(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_llama.parent)
    assert fetch_source(tiny_llama.name) == tiny_llama.resolve()
    assert fetch_source(str(tiny_llama)) == tiny_llama.resolve()


def test_default_cache_dir_reads_environment_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJL_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("DJL_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "djl_python"


def test_writable_graph_folder_is_used_in_place(tmp_path: Path) -> None:
    graphs = write_neffs(tmp_path / "graphs")
    assert fetch_compiled_graphs(str(graphs), writable_fallback=tmp_path / "fallback") == graphs
    assert not (tmp_path / "fallback").exists()


def test_missing_graph_folder_becomes_an_empty_cache(tmp_path: Path) -> None:
    wanted = tmp_path / "new" / "cache"
    assert fetch_compiled_graphs(str(wanted)) == wanted and wanted.is_dir()


def test_read_only_graph_folder_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graphs = write_neff_cache(tmp_path / "opt-ml-model")
    fallback = tmp_path / "var-tmp-neuron-compile-cache"
    (fallback / "earlier").mkdir(parents=True)  # what an earlier compile left there is kept
    for path in sorted(graphs.rglob("*"), reverse=True) + [graphs]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if os.geteuid() == 0:
        # root may write anywhere but a read-only mount; the mode bits stand in for one here.
        monkeypatch.setattr(sources, "is_writable", lambda p: bool(p.stat().st_mode & stat.S_IWUSR))
    try:
        copy = fetch_compiled_graphs(str(graphs), writable_fallback=fallback)
    finally:
        for path in [graphs, *graphs.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert copy == fallback
    original = sorted(p.relative_to(graphs) for p in graphs.rglob("*"))
    assert original and set(original) <= {p.relative_to(fallback) for p in fallback.rglob("*")}
    assert (fallback / "earlier").is_dir()
    assert os.access(copy, os.W_OK)


def test_bad_graph_paths(tmp_path: Path) -> None:
    neff = write_neffs(tmp_path / "g") / f"{0:020x}.neff"
    with pytest.raises(ArtifactError, match="is a file; expected a folder of .neff files"):
        fetch_compiled_graphs(str(neff))
    with pytest.raises(ArtifactError, match="unsupported compiled_graph_path 'gs://b/x'"):
        fetch_compiled_graphs("gs://b/x")
