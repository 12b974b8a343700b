"""Hugging Face Hub ids → a snapshot folder in the HF cache.

Only the files a causal LM needs are fetched (``allow_patterns``): configs,
tokenizer files, weights and their index, chat templates, and ``*.py`` only
when remote code is trusted. ``huggingface_hub`` keeps its own cache
(``HF_HUB_CACHE`` / ``HF_HOME``), reads ``HF_TOKEN`` itself and never
re-downloads a file whose commit is already cached.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from djl_python.artifacts.errors import ArtifactError

logger = logging.getLogger(__name__)

# What a causal LM folder is made of; everything else in a repo (ONNX exports,
# GGUF variants, images, original checkpoints) is left on the Hub.
MODEL_FILE_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "*.tiktoken",
    "chat_template*",
    "*.safetensors",
    "*.bin",
    "*.index.json",
)
REMOTE_CODE_PATTERNS: tuple[str, ...] = ("*.py",)

# `org/name` or `name`: letters, digits, `-`, `_`, `.`; the hub's own validator
# then rejects the remaining oddities (`--`, `..`, length).
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}


def looks_like_repo_id(uri: str) -> bool:
    """True when ``uri`` is shaped like a Hub model id (it is not checked online)."""
    if not _REPO_ID.match(uri):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(uri)
    except HFValidationError:
        return False
    return True


def allow_patterns(trust_remote_code: bool) -> list[str]:
    """The file patterns fetched for a model; ``*.py`` only with remote code trusted."""
    patterns = list(MODEL_FILE_PATTERNS)
    if trust_remote_code:
        patterns += REMOTE_CODE_PATTERNS
    return patterns


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE``, read at call time (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def download_repo(
    repo_id: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    token: str | None = None,
    hf_cache_dir: str | Path | None = None,
) -> Path:
    """Return the local snapshot folder of ``repo_id`` at ``revision``, downloading what is missing.

    ``hf_cache_dir`` defaults to ``$HF_HUB_CACHE`` (read now) and then to the
    library's default. With ``HF_HUB_OFFLINE`` set only the cache is consulted.
    Every failure (not cached while offline, unknown repo or revision, gated
    repo without a token, network error) becomes one ``ArtifactError`` naming
    the id and revision.
    """
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    cache = hf_cache_dir or os.environ.get("HF_HUB_CACHE") or None
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    logger.info("resolving Hugging Face model %s%s", where, " (offline)" if offline else "")
    patterns = allow_patterns(trust_remote_code)
    with _hub_errors(repo_id, revision, where, cache):
        if not offline and _has_safetensors(repo_id, revision, token):
            # Repos often carry both formats; fetch the .bin weights only when there are no safetensors.
            patterns = [p for p in patterns if p != "*.bin"]
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            token=token,
            local_files_only=offline,
            allow_patterns=patterns,
        )
    return Path(folder)


def _has_safetensors(repo_id: str, revision: str | None, token: str | None) -> bool:
    """Whether the repo lists ``*.safetensors`` files; False when the listing cannot be had.

    Unknown, gated and private repos raise here (and become ``ArtifactError``);
    a network failure is left to ``snapshot_download``, which falls back to the cache.
    """
    from huggingface_hub import list_repo_files
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = list_repo_files(repo_id, revision=revision, token=token)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - any transport error: the snapshot step decides
        logger.debug("could not list files of %s (%s); fetching every weight format", repo_id, err)
        return False
    return any(name.endswith(".safetensors") for name in files)


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, where: str, cache: str | Path | None) -> Iterator[None]:
    """Turn every huggingface_hub failure into one ``ArtifactError`` naming the model."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as err:
        raise ArtifactError(
            f"Hugging Face model {where} is gated: accept its licence on the Hub and set HF_TOKEN"
        ) from err
    except RevisionNotFoundError as err:
        raise ArtifactError(f"Hugging Face model {repo_id!r} has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:
        raise ArtifactError(
            f"Hugging Face model {where} not found (or private: set HF_TOKEN); "
            "a local folder or s3:// url is also accepted as model_id"
        ) from err
    except LocalEntryNotFoundError as err:
        raise ArtifactError(
            f"Hugging Face model {where} is not in the local cache ({cache or 'default HF cache'}) "
            "and the Hub cannot be reached (HF_HUB_OFFLINE is set or there is no network)"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise ArtifactError(f"could not download Hugging Face model {where}: {err}") from err
