"""``s3://bucket/prefix`` → a complete local copy in the download cache.

Invariants:

* The copy lives in ``<cache_dir>/s3/<sha256(url)[:16]>``. It is written into a
  temporary sibling folder and renamed into place (``os.replace``) only after
  every object arrived, with a completion marker inside; a folder without the
  marker is never used. An interrupted download leaves at most a hidden
  temporary folder, which is removed.
* A complete copy is reused without any request to S3 (delete the folder to
  refresh it), exactly as DJL reuses its synced download folder.
* Every key is checked before anything is written: a key that would land
  outside the target folder (``..``, absolute, backslashes) refuses the whole url.

boto3 finds credentials, region and ``AWS_ENDPOINT_URL_S3`` by itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from djl_python.artifacts.errors import ArtifactError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".djl_complete"
MAX_WORKERS = 8


@dataclass(frozen=True)
class S3Object:
    """One object to fetch: its key and its path relative to the copy's root."""

    key: str
    relative: PurePosixPath
    size: int


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix/")`` (prefix may be "")."""
    if not url.startswith("s3://"):
        raise ArtifactError(f"not an S3 url: {url!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ArtifactError(f"S3 url {url!r} has no bucket name (expected s3://bucket/prefix)")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def cache_folder(url: str, cache_dir: Path) -> Path:
    """Where the copy of ``url`` lives: one folder per url, named by its hash."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir / "s3" / digest


def safe_relative(key: str, prefix: str) -> PurePosixPath:
    """The path of ``key`` below ``prefix``; raises when it could escape the target folder."""
    relative = key[len(prefix):]
    path = PurePosixPath(relative)
    if (
        "\\" in relative
        or relative.startswith("/")
        or path.is_absolute()
        or any(part in ("..", ".") for part in path.parts)
        or not path.parts
    ):
        raise ArtifactError(
            f"refusing S3 object key {key!r}: its path {relative!r} would leave the download folder "
            "('..', '.', absolute paths and backslashes are not allowed); nothing was downloaded"
        )
    return path


def download_s3(url: str, *, cache_dir: Path, max_workers: int = MAX_WORKERS) -> Path:
    """Return a complete local copy of everything under ``url``, downloading it if needed."""
    target = cache_folder(url, cache_dir)
    if (target / COMPLETE_MARKER).is_file():
        logger.info("using cached copy of %s at %s", url, target)
        return target

    import boto3

    bucket, prefix = parse_s3_url(url)
    client = boto3.client("s3")
    objects = list_objects(client, bucket, prefix, url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        _download_all(client, bucket, objects, tmp, url, max_workers)
        (tmp / COMPLETE_MARKER).write_text(url + "\n")
        _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def list_objects(client: Any, bucket: str, prefix: str, url: str) -> list[S3Object]:
    """Every object below ``prefix``, validated; raises when there is none or a key is unsafe."""
    from botocore.exceptions import BotoCoreError, ClientError

    objects: list[S3Object] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):  # a "folder" placeholder made by the console
                    continue
                objects.append(S3Object(key, safe_relative(key, prefix), int(item.get("Size", 0))))
    except (BotoCoreError, ClientError) as err:
        raise ArtifactError(f"cannot list {url}: {err}") from err
    if not objects:
        raise ArtifactError(f"no objects found under {url} (expected a model folder)")
    return objects


def download_object(client: Any, bucket: str, key: str, dest: Path) -> None:
    """Fetch one object to ``dest``; boto3's transfer manager splits large ones into parts."""
    from boto3.s3.transfer import TransferConfig

    client.download_file(bucket, key, str(dest), Config=TransferConfig(max_concurrency=4))


def _download_all(
    client: Any, bucket: str, objects: list[S3Object], root: Path, url: str, max_workers: int
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    total = sum(o.size for o in objects)
    logger.info("downloading %d objects (%.1f MiB) from %s", len(objects), total / 2**20, url)
    progress = _Progress(total, len(objects))
    for obj in objects:
        (root / obj.relative).parent.mkdir(parents=True, exist_ok=True)

    def fetch(obj: S3Object) -> None:
        download_object(client, bucket, obj.key, root / obj.relative)
        progress.advance(obj)

    try:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            # list() re-raises the first failure; the pool then waits for the rest.
            list(pool.map(fetch, objects))
    except (BotoCoreError, ClientError, OSError) as err:
        raise ArtifactError(f"download of {url} failed: {err}") from err
    finally:
        progress.close()


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished copy into place; a stale, unmarked folder there is replaced."""
    if target.exists() and not (target / COMPLETE_MARKER).is_file():
        shutil.rmtree(target)
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process finished the same url first: its complete copy is as good as ours.
        if not (target / COMPLETE_MARKER).is_file():
            raise


class _Progress:
    """A tqdm bar on a terminal, otherwise a log line every ~10% of the objects."""

    def __init__(self, total_bytes: int, count: int) -> None:
        self._lock = threading.Lock()
        self._done = 0
        self._count = count
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="s3 download")

    def advance(self, obj: S3Object) -> None:
        with self._lock:
            self._done += 1
            if self._bar is not None:
                self._bar.update(obj.size)
            elif self._done == self._count or self._done % max(1, self._count // 10) == 0:
                logger.info("downloaded %d/%d objects (last: %s)", self._done, self._count, obj.key)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def upload_s3(folder: Path, url: str, *, skip: set[Path] | None = None) -> int:
    """Upload every file under ``folder`` (except those in ``skip``) to ``url`` (``s3://bucket/prefix``);
    returns the file count."""
    import boto3

    bucket, prefix = parse_s3_url(url)
    client = boto3.client("s3")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p not in (skip or set()))
    for path in files:
        key = "/".join(filter(None, [prefix.strip("/"), path.relative_to(folder).as_posix()]))
        client.upload_file(str(path), bucket, key)
    logger.info("uploaded %d files to %s", len(files), url)
    return len(files)
