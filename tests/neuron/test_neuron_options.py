"""What reaches transformers-neuronx: ``from_pretrained`` kwargs and ``NeuronConfig``, per option and version."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from djl_python.backends.neuron_loader import NeuronLoadTimeout, import_tnx, model_class
from djl_python.backends.neuron_versions import NeuronVersionError
from tests.neuron.conftest import load_neuron


def pretrained_kwargs(tnx) -> dict:
    (call,) = tnx.events("from_pretrained")
    return call[3]


def recorded_neuron_config(tnx) -> dict:
    return pretrained_kwargs(tnx)["neuron_config"].recorded


def test_continuous_batching_kwargs(tiny_llama: Path, tnx) -> None:
    load_neuron(tiny_llama, tensor_parallel_degree=2, max_rolling_batch_size=4, n_positions=128,
                context_length_estimate="32,64", unroll=2)
    kwargs = pretrained_kwargs(tnx)
    assert {k: kwargs[k] for k in ("tp_degree", "batch_size", "n_positions", "amp", "context_length_estimate",
                                   "unroll")} == {"tp_degree": 2, "batch_size": 4, "n_positions": [128],
                                                  "amp": "f16", "context_length_estimate": [32, 64], "unroll": 2}
    cb = recorded_neuron_config(tnx)["continuous_batching"]
    assert cb.batch_size_for_shared_caches == 4


def test_naive_kwargs_have_no_continuous_batching(tiny_model_factory, tnx) -> None:
    backend = load_neuron(tiny_model_factory("gpt2"), max_rolling_batch_size=2, n_positions=96)
    kwargs = pretrained_kwargs(tnx)
    assert kwargs["n_positions"] == 96 and kwargs["batch_size"] == 2
    assert "neuron_config" not in kwargs  # nothing asked for: TNX defaults
    assert backend.limits.prefill_buckets == (96,) and backend.limits.max_slots == 2


@pytest.mark.parametrize(
    ("options", "key", "expected"),
    [
        ({"quantize": "static_int8", "dtype": "bf16"}, "quant", {"quant_dtype": "s8", "dequant_dtype": "bf16"}),
        ({"group_query_attention": "replicated-heads"}, "group_query_attention", "replicated-heads"),
        ({"attention_layout": "BSH"}, "attention_layout", "BSH"),
        ({"collectives_layout": "BSH"}, "collectives_layout", "BSH"),
        ({"cache_layout": "BSH"}, "cache_layout", "BSH"),
        ({"fuse_qkv": "true"}, "fuse_qkv", True),
        ({"all_reduce_dtype": "bfloat16"}, "all_reduce_dtype", "bfloat16"),
        ({"cast_logits_dtype": "float16"}, "cast_logits_dtype", "float16"),
    ],
)
def test_neuron_config_option(tiny_llama: Path, tnx, options: dict, key: str, expected) -> None:
    from transformers_neuronx.constants import GQA, Layout

    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, **options)
    value = recorded_neuron_config(tnx)[key]
    if key == "quant":
        value = {"quant_dtype": value.quant_dtype, "dequant_dtype": value.dequant_dtype}
        assert pretrained_kwargs(tnx)["amp"] == "bf16"
    elif isinstance(value, (GQA, Layout)):  # 0.13 gets the enums, not strings
        value = value.value
    assert value == expected


def test_on_device_embedding_from_json(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    path = tmp_path / "embedding.json"
    path.write_text(json.dumps({"on_device_embedding": True}))
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, on_device_embedding_config=path)
    assert recorded_neuron_config(tnx)["on_device_embedding"] is True


def test_old_version_reports_unknown_option(tiny_llama: Path, tnx) -> None:
    tnx.configure("0.9.474")
    with pytest.raises(NeuronVersionError) as err:
        load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, cache_layout="BSH")
    message = str(err.value)
    assert "option.cache_layout" in message and "0.10" in message and "installed transformers-neuronx 0.9" in message
    assert tnx.events("from_pretrained") == []  # refused before anything was built


def test_legacy_version_gets_string_layouts(tiny_llama: Path, tnx) -> None:
    tnx.configure("0.10.0.332")
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, attention_layout="BSH")
    recorded = recorded_neuron_config(tnx)
    assert recorded["attention_layout"] == "BSH" and recorded["continuous_batching"].batch_size_for_shared_caches == 2


def test_mistral_continuous_batching_needs_0_11(tiny_model_factory, tnx) -> None:
    tnx.configure("0.10.0.332")
    mistral = tiny_model_factory("mistral")
    with pytest.raises(NeuronVersionError, match="mistral >= 0.11"):
        load_neuron(mistral, max_rolling_batch_size=2, n_positions=64, rolling_batch_strategy="continuous_batching")
    backend = load_neuron(mistral, max_rolling_batch_size=2, n_positions=64)  # automatic choice falls back
    assert backend.info.extra["strategy"] == "naive_rolling_batch"


def test_class_selection_by_version(tnx) -> None:
    tnx_module, version = import_tnx()
    assert model_class(tnx_module, version, "llama") is tnx_module.NeuronAutoModelForCausalLM
    tnx.configure("0.9.474")
    tnx_module, version = import_tnx()
    assert not hasattr(tnx_module, "NeuronAutoModelForCausalLM")
    assert model_class(tnx_module, version, "llama").__name__ == "LlamaForSampling"
    with pytest.raises(NeuronVersionError, match=r"mixtral' needs transformers-neuronx >= 0.10"):
        model_class(tnx_module, version, "mixtral")


def test_gpt_bigcode_is_a_clear_error(tiny_model_factory, tnx) -> None:
    with pytest.raises(NeuronVersionError) as err:
        load_neuron(tiny_model_factory("gpt_bigcode"), n_positions=64)
    assert "gpt_bigcode" in str(err.value) and "llama (>=0.8" in str(err.value) and "device=cpu" in str(err.value)


def test_gpt_neox_needs_fp32(tiny_model_factory, tnx) -> None:
    neox = tiny_model_factory("gpt_neox")
    with pytest.raises(NeuronVersionError, match="option.dtype=fp16"):
        load_neuron(neox, n_positions=64, dtype="fp16")
    load_neuron(neox, n_positions=64)
    assert pretrained_kwargs(tnx)["amp"] == "f32"


def test_load_timeout_names_the_option(tiny_llama: Path, tnx, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers_neuronx import _runtime

    monkeypatch.setattr(_runtime.PretrainedModel, "to_neuron", lambda self: time.sleep(3))
    with pytest.raises(NeuronLoadTimeout) as err:
        load_neuron(tiny_llama, n_positions=64, model_loading_timeout=1)
    assert "option.model_loading_timeout=1" in str(err.value) and "djl-partition" in str(err.value)


def test_compile_runs_in_a_scratch_dir_and_applies_the_environment(tiny_llama: Path, tnx,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers_neuronx import _runtime

    seen: dict[str, str] = {}
    original = _runtime.PretrainedModel.to_neuron

    def to_neuron(self) -> None:
        seen["cwd"], seen["flags"] = os.getcwd(), os.environ.get("NEURON_CC_FLAGS", "")
        original(self)

    monkeypatch.setattr(_runtime.PretrainedModel, "to_neuron", to_neuron)
    monkeypatch.setenv("NEURON_CC_FLAGS", "--verbose")
    before = os.getcwd()
    load_neuron(tiny_llama, n_positions=64, neuron_optimize_level=2)
    assert seen["cwd"] != before and "djl-neuron-compile-" in seen["cwd"] and os.getcwd() == before
    assert seen["flags"].split() == ["--verbose", "-O2"]


def test_optimum_export_plan() -> None:
    """An optimum-neuron export is reloaded with the arguments optimum-neuron v0.0.25 compiled it with."""
    from djl_python.backends.neuron_plan import plan_from_optimum_block

    block = {"batch_size": 4, "num_cores": 2, "sequence_length": 2048, "auto_cast_type": "bf16"}
    llama = plan_from_optimum_block(block, "llama", (0, 12))
    assert llama.strategy == "continuous_batching" and llama.prefill_buckets == [2048]
    assert llama.model_kwargs == {"batch_size": 4, "amp": "bf16", "tp_degree": 2, "n_positions": [2048],
                                  "context_length_estimate": [2048]}
    assert llama.neuron_options == {"fuse_qkv": True, "attention_layout": "BSH", "continuous_batching": 4}
    opt = plan_from_optimum_block(block, "opt", (0, 12))
    assert opt.strategy == "naive_rolling_batch" and opt.neuron_options == {"fuse_qkv": True}
    assert opt.model_kwargs["n_positions"] == 2048


def test_optimum_loader_needs_optimum_neuron(tiny_llama: Path, tnx) -> None:
    with pytest.raises(NeuronVersionError, match="model_loader=optimum needs optimum-neuron"):
        load_neuron(tiny_llama, n_positions=64, model_loader="optimum")


def test_bad_unroll_names_the_option(tiny_llama: Path, tnx) -> None:
    from djl_python.config import ConfigError

    with pytest.raises(ConfigError, match="option.unroll='all': must be a whole number"):
        load_neuron(tiny_llama, n_positions=64, unroll="all")


def test_static_batch_uses_batch_size(tiny_llama: Path, tnx) -> None:
    backend = load_neuron(tiny_llama, n_positions=64, rolling_batch="disable", batch_size=3)
    assert backend.info.extra["strategy"] == "naive_rolling_batch" and backend.limits.max_slots == 3
    assert pretrained_kwargs(tnx)["batch_size"] == 3 and "neuron_config" not in pretrained_kwargs(tnx)
