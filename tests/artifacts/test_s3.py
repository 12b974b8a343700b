"""S3 sources against a real S3-compatible server (moto_server on 127.0.0.1)."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from djl_python.artifacts import ArtifactError, Layout, fetch_compiled_graphs, fetch_source, inspect_model_dir
from djl_python.artifacts import s3 as s3_module
from djl_python.artifacts.s3 import COMPLETE_MARKER, cache_folder
from tests.artifacts.layouts import write_neff_cache


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != COMPLETE_MARKER
    }


@pytest.fixture
def uploaded(s3_bucket, tiny_llama: Path, tmp_path: Path):
    """The tiny model plus a nested folder under ``models/tiny``, and a decoy sibling prefix."""
    source = tmp_path / "source"
    source.mkdir()
    for p in tiny_llama.iterdir():
        (source / p.name).write_bytes(p.read_bytes())
    nested = source / "extra" / "deeper"
    nested.mkdir(parents=True)
    (nested / "notes.txt").write_text("nested object\n")
    s3_bucket.upload_tree(source, "models/tiny")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="models/tiny-other/config.json", Body=b"{}")
    return s3_bucket, source


def test_nested_prefix_downloads_byte_identical(uploaded, tmp_path: Path) -> None:
    bucket, source = uploaded
    local = fetch_source(bucket.url("models/tiny"), cache_dir=tmp_path / "cache")
    assert local == cache_folder(bucket.url("models/tiny"), tmp_path / "cache")
    assert (local / COMPLETE_MARKER).is_file()
    assert _files(local) == _files(source)  # the sibling prefix tiny-other is not included
    assert not filecmp.dircmp(local, source).diff_files
    assert inspect_model_dir(local).layout is Layout.HF


def test_complete_copy_is_reused_without_requests(uploaded, tmp_path: Path) -> None:
    bucket, source = uploaded
    url = bucket.url("models/tiny/")
    first = fetch_source(url, cache_dir=tmp_path / "cache")
    bucket.delete()  # any request to S3 for this url would now fail
    second = fetch_source(url, cache_dir=tmp_path / "cache")
    assert second == first
    assert _files(second) == _files(source)


def test_interrupted_download_leaves_nothing_complete_and_retry_finishes(
    uploaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, source = uploaded
    url = bucket.url("models/tiny")
    cache = tmp_path / "cache"
    real = s3_module.download_object
    calls = {"n": 0}

    def crash_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("simulated kill half way")
        return real(*args, **kwargs)

    monkeypatch.setattr(s3_module, "download_object", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        fetch_source(url, cache_dir=cache)
    target = cache_folder(url, cache)
    assert calls["n"] > 2
    assert not target.exists()
    assert list((cache / "s3").iterdir()) == []  # the temporary folder was removed too

    # A process killed outright leaves an unmarked folder; it must never be taken as complete.
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    monkeypatch.setattr(s3_module, "download_object", real)
    assert fetch_source(url, cache_dir=cache) == target
    assert _files(target) == _files(source)


@pytest.mark.parametrize("bad_key", ["models/evil/../../escape.txt", "models/evil//abs.txt", "models/evil/a\\..\\b"])
def test_key_escaping_the_folder_is_refused_before_writing(s3_bucket, tmp_path: Path, bad_key: str) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="models/evil/config.json", Body=b"{}")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=bad_key, Body=b"pwned")
    listed = [o["Key"] for o in s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]]
    assert bad_key in listed  # the server really holds the hostile key
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactError, match="refusing S3 object key") as info:
        fetch_source(s3_bucket.url("models/evil"), cache_dir=cache)
    assert repr(bad_key) in str(info.value)
    assert not (cache / "s3").exists() or list((cache / "s3").rglob("*")) == []
    assert not (tmp_path / "escape.txt").exists()


def test_empty_prefix_and_missing_bucket_are_clear_errors(s3_bucket, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no objects found under s3://.*/nothing"):
        fetch_source(s3_bucket.url("nothing"), cache_dir=tmp_path)
    with pytest.raises(ArtifactError, match="cannot list s3://no-such-bucket-xyz"):
        fetch_source("s3://no-such-bucket-xyz/model", cache_dir=tmp_path)


def test_compiled_graphs_from_s3(s3_bucket, tmp_path: Path) -> None:
    dump = write_neff_cache(tmp_path / "neff-cache")
    s3_bucket.upload_tree(dump, "graphs")
    local = fetch_compiled_graphs(s3_bucket.url("graphs"), cache_dir=tmp_path / "cache")
    assert _files(local) == _files(dump)
