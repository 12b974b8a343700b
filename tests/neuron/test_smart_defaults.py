"""LMI's Neuron smart defaults and the Neuron memory plan.

The reference cases are LMI's own, with the configs and results of djl-serving afece25d
``wlm/src/test/java/ai/djl/serving/wlm/NeuronSmartDefaultUtilsTest.java`` (resources under
``wlm/src/test/resources/smart-default-model/``): the Java implementation, which LMI 0.30+
applies in the model server. ``hasNeuron() == false`` there means one core.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from djl_python.backends.neuron.memory import plan_neuron_memory
from djl_python.backends.neuron.smart_defaults import default_n_positions, model_parameters, smart_defaults
from djl_python.config import ConfigError
from tests.neuron.conftest import load_neuron

LLAMA_2B = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 2048,
            "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4, "vocab_size": 32000}
LLAMA_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
            "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "vocab_size": 128256}
LLAMA_70B = {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
             "max_position_embeddings": 131072, "num_attention_heads": 64, "num_hidden_layers": 80,
             "num_key_value_heads": 8, "vocab_size": 128256}
UNIT = {"model_type": "default", "hidden_size": 1, "intermediate_size": 1, "max_position_embeddings": 1,
        "num_attention_heads": 1, "num_hidden_layers": 1, "num_key_value_heads": 1, "vocab_size": 1}
GPT2 = {"model_type": "gpt2", "n_embd": 768, "vocab_size": 50257}


def test_lmis_parameter_counts() -> None:
    """testModelConfigParametersLlama / Default / GPT2."""
    assert (default_n_positions(LLAMA_70B), model_parameters(LLAMA_70B)) == (4096, 71895883776)
    assert (default_n_positions(UNIT), model_parameters(UNIT)) == (1, 19)
    assert default_n_positions(GPT2) == 0


def smart(config, *, cores=1, quantized=False, n_positions=None, tp=None, batch=None):
    result = smart_defaults(config, cores=cores, quantized=quantized, n_positions=n_positions,
                            tensor_parallel_degree=tp, max_rolling_batch_size=batch)
    return result.n_positions, result.tensor_parallel_degree, result.max_rolling_batch_size


@pytest.mark.parametrize(("case", "config", "kwargs", "expected"), [
    ("testApplySmartDefaultsGPT2Model", GPT2, {}, (None, None, None)),
    ("testApplySmartDefaults70BModel", LLAMA_70B, {}, (4096, 1, None)),
    ("testApplySmartDefaultsQuantize8BModel", LLAMA_8B, {"quantized": True}, (4096, 1, 16)),
    ("testApplySmartDefaults2BModel", LLAMA_2B, {}, (2048, 1, 32)),
    ("testApplySmartDefaultsQuantize2BModel", LLAMA_2B, {"quantized": True}, (2048, 1, 32)),
    ("testApplySmartDefaultsWithNPositions", LLAMA_2B, {"n_positions": 128}, (None, 1, 32)),
    ("testApplySmartDefaultsWithTPDegree", LLAMA_2B, {"tp": 1}, (2048, None, 32)),
    ("testApplySmartDefaultsWithMaxRollingBatch", LLAMA_2B, {"batch": 64}, (2048, 1, None)),
    ("testApplySmartDefaultsWithNeuron8bModel", LLAMA_8B, {"cores": 32}, (4096, 2, 16)),
    ("testApplySmartDefaultsWithNeuron70bModel", LLAMA_70B, {"cores": 32}, (4096, 32, 32)),
])
def test_lmis_smart_defaults(case: str, config: dict, kwargs: dict, expected: tuple) -> None:
    assert smart(config, **kwargs) == expected, case


def test_every_choice_says_why() -> None:
    result = smart_defaults(LLAMA_8B, cores=32, quantized=False, n_positions=None, tensor_parallel_degree=None,
                            max_rolling_batch_size=None)
    assert [r.split()[0] for r in result.reasons] == ["n_positions", "tensor_parallel_degree",
                                                      "max_rolling_batch_size"]


def test_a_7b_model_at_the_old_default_does_not_fit_one_core() -> None:
    """32 slots x 4096 positions at TP 1 (the former server default) is far beyond 16 GiB for Llama-2-7B's KV
    cache; LMI's choice on an inf2.24xlarge (12 cores) fits."""
    llama_2_7b = {**LLAMA_8B, "vocab_size": 32000, "intermediate_size": 11008, "num_key_value_heads": 32}
    old = plan_neuron_memory(llama_2_7b, None, tp_degree=1, slots=32, n_positions=4096, amp="f16", quantized=False)
    assert old.kv_bytes == 2 * 32 * 32 * 4096 * 32 * 128 * 2 and old.total_bytes > 16 * 2**30
    _, tp, batch = smart(llama_2_7b, cores=12)
    assert (tp, batch) == (4, 16)  # LMI's Java and Python disagree here (8 / 32): the Java one runs in serving
    fits = plan_neuron_memory(llama_2_7b, None, tp_degree=tp, slots=batch, n_positions=4096, amp="f16",
                              quantized=False)
    assert fits.total_bytes <= tp * 16 * 2**30


def test_the_memory_plan_refuses_what_cannot_fit_naming_the_keys(tiny_llama: Path, tnx) -> None:
    with pytest.raises(ConfigError, match=r"option\.max_rolling_batch_size.*option\.n_positions.*"
                                          r"option\.tensor_parallel_degree"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, memory_budget="1KiB")
    assert not tnx.events("from_pretrained")


def test_smart_defaults_act_on_the_visible_cores_when_keys_are_unset(tiny_llama: Path, tnx, caplog,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "2")
    monkeypatch.setattr("djl_python.backends.neuron.load.smart_defaults", lambda config, **kw: smart_defaults(
        LLAMA_8B, **kw))  # the tiny model is sized as Llama-3-8B, so the choice is LMI's for that model
    with caplog.at_level("INFO"):
        backend = load_neuron(tiny_llama, n_positions=64)
    assert "[Smart Default] tensor_parallel_degree 2" in caplog.text
    assert backend.info.extra["tp_degree"] == 2 and backend.limits.max_slots == smart(
        LLAMA_8B, cores=2, n_positions=64)[2]


def test_smart_defaults_leave_set_keys_alone(tiny_llama: Path, tnx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "2")
    backend = load_neuron(tiny_llama, n_positions=64, tensor_parallel_degree=1, max_rolling_batch_size=3)
    assert backend.info.extra["tp_degree"] == 1 and backend.limits.max_slots == 3


def test_kv_heads_are_held_as_tnx_pads_and_replicates_them() -> None:
    """1ade6d7 utils.get_qkv_padding (utils.py:355-395) and decoder.init_caches (decoder.py:1758-1791), worked
    by hand: Llama-3-70B (64 heads, 8 K/V) on 24 cores replicates each K/V head 3 times (8 does not divide 24);
    shard-over-batch holds each once; all-gather-heads pads 8 to 24. Llama-3-8B (32, 8) on 8 cores with
    replicated-heads needs no replication (4 query heads per core share one K/V head)."""
    from djl_python.backends.neuron.memory import kv_heads_held

    assert [kv_heads_held(64, 8, 24, mode) for mode in (None, "shard-over-heads", "replicated-heads",
                                                         "shard-over-batch", "all-gather-heads")] == [24, 24, 24, 8, 24]
    assert kv_heads_held(32, 8, 8, "replicated-heads") == 8 and kv_heads_held(32, 8, 2, None) == 8
    plan = plan_neuron_memory(LLAMA_8B, None, tp_degree=8, slots=32, n_positions=4096, amp="bf16", quantized=False,
                              group_query_attention="replicated-heads")
    assert plan.kv_bytes == 2 * 32 * 32 * 4096 * 8 * 128 * 2 and plan.kv_bytes == 16 * 2**30


def test_no_smart_defaults_without_max_position_embeddings(tiny_model_factory, tnx, caplog,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """LMI skips them when config.json has no max_position_embeddings (GPT-2 names it n_positions)."""
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "2")
    with caplog.at_level("INFO"):
        backend = load_neuron(tiny_model_factory("gpt2"))
    assert "[Smart Default] none" in caplog.text and backend.limits.max_slots == 32


def test_djl_partition_checks_the_memory_plan_before_compiling(tiny_llama: Path, tnx, tmp_path: Path,
                                                               capsys) -> None:
    from djl_python.partition import main

    argv = ["--model-id", str(tiny_llama), "--save-mp-checkpoint-path", str(tmp_path / "out"), "--option",
            "device=neuron", "--option", "max_rolling_batch_size=2", "--option", "n_positions=64",
            "--option", "memory_budget=1KiB"]
    assert main(argv) != 0
    assert "option.max_rolling_batch_size" in capsys.readouterr().err and not tnx.events("from_pretrained")
