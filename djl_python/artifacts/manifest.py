"""``djl_manifest.json``: what a set of compiled artifacts was built with.

transformers-neuronx ``save()`` writes bare ``.neff`` files with no record of the
settings that produced them; a mismatch only shows as "Could not find a
matching NEFF" after the weights are loaded, or as a silent recompile of tens of
minutes. The partition/compile step therefore writes this manifest next to the
compiled graphs, and the loader checks it against the configuration first.

Contract: ``compile_config`` holds exactly the settings that change the
compiled graphs (tp_degree, batch_size, n_positions, amp,
context_length_estimate, quantize, continuous batching, layouts, fuse_qkv,
group_query_attention, ...), as JSON values. ``check_manifest`` compares the
keys the caller expects; keys it does not mention are not checked.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from djl_python.artifacts.errors import ArtifactError

MANIFEST_NAME = "djl_manifest.json"
FORMAT_VERSION = 1
# Distributions whose versions decide whether compiled graphs can be reused.
VERSIONED_PACKAGES = ("djl_python", "transformers", "transformers-neuronx", "neuronx-cc", "torch", "torch-neuronx")


@dataclass(frozen=True)
class Manifest:
    """The contents of ``djl_manifest.json``."""

    backend: str
    compile_config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    compiler_version: str | None = None
    created_at: str = ""
    format_version: int = FORMAT_VERSION


def library_versions() -> dict[str, str]:
    """Installed versions of ``VERSIONED_PACKAGES``; packages not installed are left out."""
    found: dict[str, str] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_manifest(
    directory: Path | str,
    *,
    backend: str,
    compile_config: Mapping[str, Any],
    compiler_version: str | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``directory/djl_manifest.json`` atomically and return its path.

    ``versions`` defaults to ``library_versions()``; ``compiler_version`` to the
    installed neuronx-cc, if any. ``compile_config`` must be JSON-serialisable.
    """
    directory = Path(directory)
    installed = dict(versions) if versions is not None else library_versions()
    manifest = Manifest(
        backend=backend,
        compile_config=_jsonable(dict(compile_config), "compile_config"),
        versions=installed,
        compiler_version=compiler_version or installed.get("neuronx-cc"),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(manifest), out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def read_manifest(directory: Path | str) -> Manifest | None:
    """The manifest in ``directory``, or None when there is none; raises on a malformed one."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or not isinstance(raw.get("compile_config"), dict):
            raise ValueError("expected an object with a 'compile_config' object")
        known = {name: raw[name] for name in Manifest.__dataclass_fields__ if name in raw}
        return Manifest(**known)
    except (OSError, ValueError, TypeError) as err:
        raise ArtifactError(f"cannot read compile manifest {path}: {err}") from err


def manifest_mismatches(
    manifest: Manifest, expected: Mapping[str, Any], *, compiler_version: str | None = None,
    tnx_version: str | None = None,
) -> list[tuple[str, Any, Any]]:
    """Every ``(key, compiled value, configured value)`` that differs, in ``expected``'s order.

    Values are compared as JSON (a tuple equals a list). A key the manifest does
    not record counts as a mismatch with compiled value ``"<not recorded>"``.
    Versions: graphs from a *newer* neuronx-cc than the installed one are refused,
    older ones accepted (optimum-neuron ``check_compiler_compatibility`` does the
    same); graphs from another transformers-neuronx release are refused (its HLO,
    hence the graph hashes, change between releases).
    """
    wanted = _jsonable(dict(expected), "expected")
    found: list[tuple[str, Any, Any]] = []
    for key, value in wanted.items():
        compiled = manifest.compile_config.get(key, "<not recorded>")
        if compiled != value:
            found.append((key, compiled, value))
    if compiler_version and manifest.compiler_version and _newer(manifest.compiler_version, compiler_version):
        found.append(("compiler_version (newer than installed)", manifest.compiler_version, compiler_version))
    compiled_tnx = manifest.versions.get("transformers-neuronx")
    if tnx_version and compiled_tnx and compiled_tnx != tnx_version:
        found.append(("transformers-neuronx", compiled_tnx, tnx_version))
    return found


def _newer(compiled: str, installed: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(compiled) > Version(installed)
    except InvalidVersion:
        return compiled != installed


def check_manifest(
    manifest: Manifest, expected: Mapping[str, Any], *, compiler_version: str | None = None, where: str = "",
    tnx_version: str | None = None,
) -> None:
    """Raise one ``ArtifactError`` listing every mismatch; return quietly when there is none."""
    mismatches = manifest_mismatches(manifest, expected, compiler_version=compiler_version, tnx_version=tnx_version)
    if mismatches:
        listed = "; ".join(f"{key}: compiled {c!r}, configured {v!r}" for key, c, v in mismatches)
        raise ArtifactError(
            f"compiled artifacts{f' in {where}' if where else ''} do not match the configuration "
            f"(mismatch: {listed}); change the configuration to match or compile again"
        )


def _jsonable(value: dict[str, Any], what: str) -> dict[str, Any]:
    """A JSON round trip: tuples become lists, and anything unserialisable is reported."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{what} is not JSON-serialisable: {err}") from err
