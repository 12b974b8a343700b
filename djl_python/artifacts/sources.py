"""Any model source → a local folder: the single entry point for ids, urls and paths.

``fetch_source`` decides by the shape of the string, in this order:

1. ``s3://bucket/prefix`` → a complete copy in the download cache (``s3.py``);
2. an existing local path → used in place (``~`` expanded, made absolute);
3. a Hugging Face id (``org/name`` or ``name``) → the HF cache snapshot (``hf.py``);
4. anything else (a path that does not exist, an unknown url scheme) → ``ArtifactError``.

``fetch_compiled_graphs`` does the same for ``compiled_graph_path`` (S3 or
local, never a Hub id) and makes sure the Neuron compiler can write into the
folder, copying a read-only one (``writable_compile_cache``).
"""

from __future__ import annotations

import logging
import os
import shutil
from enum import Enum
from pathlib import Path

from djl_python.artifacts.errors import ArtifactError
from djl_python.artifacts.hf import download_repo, looks_like_repo_id
from djl_python.artifacts.s3 import download_s3

logger = logging.getLogger(__name__)

# Where DJL 0.28 copies a read-only neff cache, and the Neuron SDK's default cache.
DEFAULT_WRITABLE_COMPILE_CACHE = Path("/var/tmp/neuron-compile-cache")


class SourceKind(str, Enum):
    """What kind of string a model source is."""

    S3 = "s3"
    LOCAL = "local"
    HF_HUB = "hf_hub"


def default_cache_dir() -> Path:
    """The download cache root: ``$DJL_CACHE_DIR`` or ``~/.cache/djl_python`` (read at call time)."""
    return Path(os.environ.get("DJL_CACHE_DIR") or Path.home() / ".cache" / "djl_python")


def classify_source(uri: str) -> SourceKind:
    """Classify ``uri``; raises ``ArtifactError`` when it is none of the three kinds."""
    if not uri or not uri.strip():
        raise ArtifactError("model source is empty: set option.model_id (HF id, s3:// url or local folder)")
    if uri.startswith("s3://"):
        return SourceKind.S3
    if Path(uri).expanduser().exists():
        return SourceKind.LOCAL
    if "://" in uri:
        raise ArtifactError(f"unsupported model source {uri!r}: only s3:// urls, local paths and HF ids are accepted")
    if uri.startswith(("/", ".", "~")) or not looks_like_repo_id(uri):
        raise ArtifactError(
            f"model source {uri!r} is not an existing local path and not a Hugging Face id "
            "(expected 'org/name', 's3://bucket/prefix' or a folder that exists)"
        )
    return SourceKind.HF_HUB


def fetch_source(
    uri: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: Path | str | None = None,
    token: str | None = None,
) -> Path:
    """Return a local folder (or file, for a local path) holding what ``uri`` names.

    ``revision`` and ``token`` apply to Hugging Face ids only (the token
    defaults to ``HF_TOKEN``, read by huggingface_hub). ``cache_dir`` is the
    root of the S3 download cache (default ``default_cache_dir()``); Hub
    downloads go to the Hugging Face cache. Raises ``ArtifactError``.
    """
    kind = classify_source(uri)
    if kind is SourceKind.S3:
        return download_s3(uri, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir())
    if kind is SourceKind.LOCAL:
        return Path(uri).expanduser().resolve()
    return download_repo(uri, revision=revision, trust_remote_code=trust_remote_code, token=token)


def fetch_compiled_graphs(
    uri: str,
    *,
    cache_dir: Path | str | None = None,
    writable_fallback: Path = DEFAULT_WRITABLE_COMPILE_CACHE,
) -> Path:
    """Resolve ``compiled_graph_path`` (an ``s3://`` url or a local folder) to a writable local folder.

    S3 graphs are downloaded like a model (into the cache, hence writable); a
    local folder goes through ``writable_compile_cache``. A local folder that
    does not exist yet is created: it is a compile cache that compilation fills.
    """
    if not uri or not uri.strip():
        raise ArtifactError("compiled_graph_path is empty: expected an s3:// url or a local folder")
    if uri.startswith("s3://"):
        return download_s3(uri, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir())
    if "://" in uri:
        raise ArtifactError(f"unsupported compiled_graph_path {uri!r}: expected an s3:// url or a local folder")
    return writable_compile_cache(Path(uri).expanduser().resolve(), fallback=writable_fallback)


def is_writable(path: Path) -> bool:
    """Whether this process may create files in ``path`` (False on a read-only mount, even as root)."""
    return os.access(path, os.W_OK)


def writable_compile_cache(path: Path, *, fallback: Path = DEFAULT_WRITABLE_COMPILE_CACHE) -> Path:
    """Return a compile-cache folder the Neuron compiler may write to, based on ``path``.

    A writable (or not yet existing) ``path`` is returned as is (created if
    missing). A read-only one, such as SageMaker's ``/opt/ml/model`` mount, is
    copied into ``fallback`` (merged with what is already there) and the copy
    is returned, as DJL 0.28 does for ``NEURON_COMPILE_CACHE_URL``.
    """
    if not path.exists():
        logger.warning("compiled graph folder %s does not exist; creating it as an empty compile cache", path)
        try:
            path.mkdir(parents=True)
            return path
        except OSError as err:
            raise ArtifactError(f"compiled_graph_path {path} does not exist and cannot be created: {err}") from err
    if not path.is_dir():
        raise ArtifactError(f"compiled_graph_path {path} is a file; expected a folder of .neff files or a neff cache")
    if is_writable(path):
        return path
    if not os.access(path, os.R_OK | os.X_OK):
        raise ArtifactError(f"compiled_graph_path {path} is neither readable nor writable")
    logger.info("compiled graph folder %s is read-only; copying it to %s", path, fallback)
    try:
        shutil.copytree(path, fallback, dirs_exist_ok=True)
    except OSError as err:
        raise ArtifactError(f"cannot copy read-only compiled graphs {path} to {fallback}: {err}") from err
    return fallback
