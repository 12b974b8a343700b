"""The optimum-neuron ``neuron`` block against configured values."""

from __future__ import annotations

import pytest

from djl_python.artifacts import ArtifactError, check_neuron_block, normalize_dtype
from tests.artifacts.layouts import neuron_block


def test_every_mismatch_is_reported_with_both_values() -> None:
    with pytest.raises(ArtifactError) as info:
        check_neuron_block(
            neuron_block(), batch_size=8, tensor_parallel_degree=4, n_positions=256, dtype="bf16",
            batch_size_key="max_rolling_batch_size",
        )
    message = str(info.value)
    assert "mismatch" in message
    for expected in (
        "option.max_rolling_batch_size=8 but the compiled model has batch_size=4",
        "option.tensor_parallel_degree=4 but the compiled model has num_cores=2",
        "option.n_positions=256 but the compiled model has sequence_length=128",
        "option.dtype=bf16 but the compiled model has auto_cast_type=fp16",
    ):
        assert expected in message


def test_matching_values_pass_and_unset_ones_are_adopted() -> None:
    matching = dict(batch_size=4, tensor_parallel_degree=2, n_positions=128, dtype="f16")
    assert check_neuron_block(neuron_block(), **matching) == {}
    unset = dict(batch_size=None, tensor_parallel_degree=None, n_positions=None, dtype=None)
    adopted = check_neuron_block(neuron_block(), **unset)
    assert adopted == {"batch_size": 4, "tensor_parallel_degree": 2, "n_positions": 128, "dtype": "fp16"}


def test_keys_absent_from_old_exports_are_neither_checked_nor_adopted() -> None:
    block = {"batch_size": 1, "num_cores": 2}
    assert check_neuron_block(block, batch_size=1, tensor_parallel_degree=None, n_positions=999, dtype="bf16") == {
        "tensor_parallel_degree": 2
    }


def test_compiler_version_is_checked_only_when_installed() -> None:
    kwargs = dict(batch_size=None, tensor_parallel_degree=None, n_positions=None, dtype=None)
    check_neuron_block(neuron_block(), installed_compiler_version=None, **kwargs)
    # As optimum-neuron's check_compiler_compatibility, an older compiler's graphs load...
    check_neuron_block(neuron_block(), installed_compiler_version="2.14.0", **kwargs)
    # ...and only a newer one than installed is refused.
    with pytest.raises(ArtifactError, match=r"installed neuronx-cc is 2\.12\.0 .*newer compiler_version=2\.13\.66"):
        check_neuron_block(neuron_block(), installed_compiler_version="2.12.0", **kwargs)


def test_malformed_block_value() -> None:
    with pytest.raises(ArtifactError, match="neuron.batch_size in config.json must be an integer"):
        check_neuron_block(neuron_block(batch_size="4"), batch_size=4, tensor_parallel_degree=None,
                           n_positions=None, dtype=None)


@pytest.mark.parametrize(("raw", "canonical"), [("f16", "fp16"), ("bfloat16", "bf16"), ("FP32", "fp32"), (None, None)])
def test_dtype_spellings(raw: str | None, canonical: str | None) -> None:
    assert normalize_dtype(raw) == canonical
