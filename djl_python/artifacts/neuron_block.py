"""The ``neuron`` block of an optimum-neuron ``config.json``, checked against the configuration.

Compiled graphs fix the batch size, core count, sequence length and cast type;
a configuration asking for anything else cannot run them. Every difference is
reported at once (naming the LMI option and the compiled value), before any
weight is loaded. Settings the configuration leaves unset are *adopted* from the
block and returned, so the caller builds the backend with the compiled shape.

Correspondence (LMI option ↔ block key):

* ``batch_size`` (or ``max_rolling_batch_size`` with rolling batch on) ↔ ``batch_size``
* ``tensor_parallel_degree`` ↔ ``num_cores``
* ``n_positions`` ↔ ``sequence_length``
* ``dtype`` ↔ ``auto_cast_type``
* the installed neuronx-cc ↔ ``compiler_version`` (checked only where neuronx-cc is installed; only a
  newer compiled version is refused, as optimum-neuron does)
"""

from __future__ import annotations

from typing import Any, Mapping

from djl_python.artifacts.errors import ArtifactError
from djl_python.artifacts.manifest import _newer
from djl_python.config import dtypes

def normalize_dtype(value: str | None) -> str | None:
    """``fp32``/``fp16``/``bf16`` for any common spelling (``f16``, ``float16``...); unknown values pass through."""
    if value is None:
        return None
    return dtypes.canonical(value) or str(value)


def check_neuron_block(
    block: Mapping[str, Any],
    *,
    batch_size: int | None,
    tensor_parallel_degree: int | None,
    n_positions: int | None,
    dtype: str | None,
    batch_size_key: str = "batch_size",
    installed_compiler_version: str | None = None,
    where: str = "config.json",
) -> dict[str, Any]:
    """Validate the configured values against ``block`` and return the adopted ones.

    A configured value of None means "not set": the compiled value is adopted
    and appears in the returned ``{option name: value}`` dict. Any other value
    must equal the compiled one. Raises ``ArtifactError`` listing every
    mismatch as ``option.<key>=<configured> but the compiled model has
    <block key>=<compiled>``.
    """
    pairs: list[tuple[str, str, Any, Any]] = [
        (batch_size_key, "batch_size", batch_size, _int(block, "batch_size", where)),
        ("tensor_parallel_degree", "num_cores", tensor_parallel_degree, _int(block, "num_cores", where)),
        ("n_positions", "sequence_length", n_positions, _int(block, "sequence_length", where)),
        ("dtype", "auto_cast_type", normalize_dtype(dtype), normalize_dtype(block.get("auto_cast_type"))),
    ]
    adopted: dict[str, Any] = {}
    problems: list[str] = []
    for option, key, configured, compiled in pairs:
        if compiled is None:  # older exports lack some keys: nothing to check or adopt
            continue
        if configured is None:
            adopted[option] = compiled
        elif configured != compiled:
            problems.append(f"option.{option}={configured} but the compiled model has {key}={compiled}")
    compiled_cc = block.get("compiler_version")
    if installed_compiler_version and compiled_cc and _newer(str(compiled_cc), installed_compiler_version):
        # optimum-neuron (v0.0.17..v0.0.28 utils/version_utils.py check_compiler_compatibility)
        # refuses only graphs from a newer compiler than the installed one.
        problems.append(
            f"installed neuronx-cc is {installed_compiler_version} but the model was compiled with the newer "
            f"compiler_version={compiled_cc}"
        )
    if problems:
        raise ArtifactError(
            f"neuron block in {where} does not match the configuration (mismatch: {'; '.join(problems)}); "
            "change these options to the compiled values, leave them unset, or compile the model again"
        )
    return adopted


def _int(block: Mapping[str, Any], key: str, where: str) -> int | None:
    value = block.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArtifactError(f"neuron.{key} in {where} must be an integer, got {value!r}")
    return value
