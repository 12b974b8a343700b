"""Model artifacts: where a model comes from and what shape it has on disk.

``resolve_artifacts(config)`` turns the configured source (Hugging Face id,
``s3://`` url or local folder, plus an optional ``compiled_graph_path``) into a
local folder and a frozen ``ModelArtifacts`` description that the backends
consume. See docs/artifacts.md for the supported layouts.
"""

from djl_python.artifacts.compiled import CompiledFormat, detect_compiled
from djl_python.artifacts.errors import ArtifactError
from djl_python.artifacts.layout import Layout, ModelArtifacts, inspect_model_dir, read_hf_config
from djl_python.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    check_manifest,
    library_versions,
    manifest_mismatches,
    read_manifest,
    write_manifest,
)
from djl_python.artifacts.neuron_block import check_neuron_block, normalize_dtype
from djl_python.artifacts.resolve import resolve_artifacts
from djl_python.artifacts.s3 import upload_s3
from djl_python.artifacts.sources import (
    DEFAULT_WRITABLE_COMPILE_CACHE,
    SourceKind,
    classify_source,
    default_cache_dir,
    fetch_compiled_graphs,
    fetch_source,
    writable_compile_cache,
)
from djl_python.artifacts.weights import WeightFormat, load_split_state_dict, read_split_index, split_filename

__all__ = [
    "ArtifactError",
    "CompiledFormat",
    "DEFAULT_WRITABLE_COMPILE_CACHE",
    "Layout",
    "MANIFEST_NAME",
    "Manifest",
    "ModelArtifacts",
    "SourceKind",
    "WeightFormat",
    "check_manifest",
    "check_neuron_block",
    "classify_source",
    "default_cache_dir",
    "detect_compiled",
    "fetch_compiled_graphs",
    "fetch_source",
    "inspect_model_dir",
    "library_versions",
    "load_split_state_dict",
    "manifest_mismatches",
    "normalize_dtype",
    "read_hf_config",
    "read_manifest",
    "read_split_index",
    "resolve_artifacts",
    "split_filename",
    "upload_s3",
    "write_manifest",
]
