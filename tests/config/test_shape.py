"""The batch shape is decided once: ``max_slots``/``slots_key`` on the configuration, and the
settings adopted from compiled artifacts merged by one method."""

from __future__ import annotations

import pytest

from djl_python.config import load_config


def config(**options: object):
    return load_config(None, properties={"option.model_id": "m", **{f"option.{k}": str(v) for k, v in options.items()}},
                       env={})


def test_rolling_batch_sizes_by_max_rolling_batch_size() -> None:
    cfg = config(max_rolling_batch_size=6)
    assert cfg.rolling_batch_enabled and cfg.slots_key == "max_rolling_batch_size" and cfg.max_slots == 6


def test_static_batch_sizes_by_batch_size() -> None:
    cfg = config(rolling_batch="disable", batch_size=3, max_rolling_batch_size=6)
    assert not cfg.rolling_batch_enabled and cfg.slots_key == "batch_size" and cfg.max_slots == 3


def test_adopted_settings_fill_what_was_unset_and_keep_origins() -> None:
    cfg = load_config(None, properties={"option.model_id": "m"}, env={"OPTION_DTYPE": "fp32"})
    merged = cfg.with_compiled_settings({"max_rolling_batch_size": 4, "n_positions": 128})
    assert (merged.max_slots, merged.n_positions, merged.dtype) == (4, 128, "fp32")
    assert merged.origin("dtype") == "OPTION_DTYPE" and cfg.max_slots != 4
    assert cfg.with_compiled_settings({}) is cfg


def test_adopted_settings_must_name_options() -> None:
    with pytest.raises(ValueError, match="num_cores"):
        config().with_compiled_settings({"num_cores": 2})
