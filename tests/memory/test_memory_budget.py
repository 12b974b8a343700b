"""The memory plan equals what the PyTorch backend allocates, and a budget it exceeds stops the load first."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from djl_python.backends.pytorch import memory
from djl_python.backends.pytorch.memory import MemoryPlan, check_budget, host_available_bytes, plan_memory
from djl_python.config import ConfigError, load_config
from djl_python.config.sources import OptionValue
from tests.models import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_plan_equals_what_the_backend_allocates(tiny_model_factory, arch: str) -> None:
    """KV cache and weights of every tiny architecture (GQA, MQA, alibi, ...) against the loaded backend."""
    from djl_python.backends.pytorch.backend import PyTorchBackend

    folder = tiny_model_factory(arch)
    plan = plan_memory(folder, max_slots=2, n_positions=64, dtype=None, device="cpu")
    backend = PyTorchBackend.load(folder, max_slots=2, n_positions=64, device="cpu")
    assert plan.kv_cache_bytes == backend.info.extra["kv_cache_bytes"] > 0
    # The backend's own count: its module's parameters plus what the native forward packed
    # (the packed linears' module weights are released; a tied LM head is packed as a copy).
    held = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    assert plan.weights_bytes == backend.info.extra["weights_bytes"] >= held > 0
    assert (plan.n_positions, plan.dtype) == (backend.limits.n_positions, backend.info.dtype)


@pytest.mark.parametrize("dtype", [None, "bf16", "bf16-widened"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gptj", "opt", "bloom"])
def test_plan_counts_a_tied_head_and_biases(tmp_path: Path, dtype: str | None, arch: str, monkeypatch) -> None:
    """A tied LM head (packed as its own copy where oneDNN packs) and attention/MLP biases
    (stacked, the module's biases views or released), LayerNorm biases, learned position tables:
    the plan is still what the backend holds. bf16: packed as bf16 where oneDNN takes it, else
    widened to fp32 (.native.linear); bf16-widened: widened as on a CPU whose oneDNN has no bf16."""
    from transformers import AutoModelForCausalLM

    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.backends.pytorch.native import linear
    from tests.models import tiny_config

    forced = dtype == "bf16-widened"
    if forced:
        dtype = "bf16"
        monkeypatch.setattr(linear, "onednn_packs", lambda t: t == torch.float32)
    # Widened where forced, and for bf16 wherever this CPU has no bf16 arithmetic (.native.linear).
    widened = dtype == "bf16" and linear.packed_dtype("cpu", torch.bfloat16) == torch.float32

    config = tiny_config(arch)
    config.tie_word_embeddings = arch != "gptj"  # GPT-J's head has a bias: never tied
    if arch == "llama":
        config.attention_bias, config.mlp_bias = True, True
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path))
    plan = plan_memory(tmp_path, max_slots=2, n_positions=64, dtype=dtype, device="cpu")
    backend = PyTorchBackend.load(tmp_path, max_slots=2, n_positions=64, device="cpu", dtype=dtype)
    assert backend.info.extra["forward"] == "native"
    assert ("widened" in backend.info.extra["weights_layout"]) == widened
    assert plan.weights_bytes == backend.info.extra["weights_bytes"]


def test_default_model_plan_is_the_figure_the_issue_measured(smollm2_dir: Path) -> None:
    # the earlier docs said "3.0 GB for the 135M default model" with the defaults (32 slots, 2048 positions, fp32).
    plan = plan_memory(smollm2_dir, max_slots=32, n_positions=None, dtype=None, device="cpu")
    assert plan.kv_cache_bytes == 32 * 2048 * 30 * 2 * 3 * 64 * 4  # 3.02e9 bytes
    # 134.5M parameters x 4 bytes, plus the tied LM head's packed copy where oneDNN packs fp32.
    from djl_python.backends.pytorch.native.linear import onednn_packs

    head = 49152 * 576 * 4 if onednn_packs(torch.float32) else 0
    assert 0.5e9 < plan.weights_bytes - head < 0.6e9


def _plan(**kw) -> MemoryPlan:
    base = dict(slots=32, n_positions=2048, layers=30, kv_heads=3, head_dim=64, dtype="fp32", weights_bytes=10**9)
    return MemoryPlan(**{**base, **kw})


def test_over_budget_names_the_options_as_the_user_wrote_them(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(env={"OPTION_N_POSITIONS": "2048"},
                         overrides={"max_rolling_batch_size": OptionValue("32", "--max-num-seqs"),
                                    "memory_budget": OptionValue("2GiB", "--memory-budget-test")})
    with caplog.at_level(logging.INFO, logger="djl_python.backends.pytorch.memory"), pytest.raises(ConfigError) as info:
        check_budget(_plan(), config, "cpu")
    message = str(info.value)
    for key in ("--max-num-seqs (now 32)", "OPTION_N_POSITIONS (now 2048)", "option.dtype=bf16", "2.00 GiB",
                "raise --memory-budget-test"):
        assert key in message
    assert "memory plan: weights 0.93 GiB + KV cache 2.81 GiB" in caplog.text  # logged before the verdict
    check_budget(_plan(slots=4), config, "cpu")  # 1.3 GiB fits


def test_default_budget_is_a_share_of_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(env={})
    monkeypatch.setattr(memory, "available_memory", lambda device: (4 * 2**30, "test memory"))
    check_budget(_plan(slots=4), config, "cpu")
    with pytest.raises(ConfigError, match=r"budget is 3.60 GiB \(90% of 4.00 GiB test memory"):
        check_budget(_plan(), config, "cpu")


def test_host_memory_is_capped_by_the_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   16000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert host_available_bytes(meminfo, cgroup) == 16000000 * 1024
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("1000\n")
    assert host_available_bytes(meminfo, cgroup) == 16000000 * 1024  # v2 without a limit
    (cgroup / "memory.max").write_text(f"{2 * 2**30}\n")
    assert host_available_bytes(meminfo, cgroup) == 2 * 2**30 - 1000
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text(f"{2**29}\n")
    assert host_available_bytes(meminfo, v1) == 2**29


def test_load_stops_before_allocating_and_warns_about_tensor_parallel(
        tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.loader import load_engine

    def never(*args, **kwargs):
        raise AssertionError("the backend was built although the plan exceeds the budget")

    monkeypatch.setattr(PyTorchBackend, "load", never)
    config = load_config(tiny_llama, env={"OPTION_DEVICE": "cpu", "OPTION_MEMORY_BUDGET": "1MiB",
                                          "OPTION_TENSOR_PARALLEL_DEGREE": "2"})
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError) as info:
        load_engine(config)
    assert "raise OPTION_MEMORY_BUDGET" in str(info.value) and "option.max_rolling_batch_size (now 32)" in str(info.value)
    assert "OPTION_TENSOR_PARALLEL_DEGREE=2 is ignored: the PyTorch backend" in caplog.text


def test_the_documented_memory_plan_is_the_default_models(smollm2_dir):
    """docs/deployment.md quotes the start-up log line for the default model at the default
    32 slots x 2048 positions, fp32: it must be the line this code logs."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    plan = plan_memory(smollm2_dir, max_slots=32, n_positions=2048, dtype="fp32", device="cpu")
    assert f"`memory plan: {plan.describe()}; budget" in doc, plan.describe()


def test_prefix_cache_rows_take_the_room_the_budget_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    from djl_python.backends.pytorch.memory import with_prefix_cache

    plan = _plan(slots=4)  # 1e9 bytes of weights + 4 rows of 94.4 MB
    budget = {"memory_budget": OptionValue("1.5GB", "--memory-budget")}
    assert with_prefix_cache(plan, load_config(env={}, overrides=budget), "cpu").cache_rows == 1
    roomy = {"memory_budget": OptionValue("8GB", "--memory-budget")}
    assert with_prefix_cache(plan, load_config(env={}, overrides=roomy), "cpu").cache_rows == 4  # one per slot
    off = load_config(env={"OPTION_ENABLE_PREFIX_CACHING": "false"}, overrides=roomy)
    assert with_prefix_cache(plan, off, "cpu").cache_rows == 0
    explicit = load_config(env={"OPTION_PREFIX_CACHE_ROWS": "10"}, overrides=budget)
    sized = with_prefix_cache(plan, explicit, "cpu")
    assert sized.cache_rows == 10 and sized.kv_cache_bytes == 14 * plan.row_bytes
    with pytest.raises(ConfigError, match=r"lower OPTION_PREFIX_CACHE_ROWS \(now 10\)"):
        check_budget(sized, explicit, "cpu")
    monkeypatch.setattr(memory, "available_memory", lambda device: (None, "test memory"))
    assert with_prefix_cache(plan, load_config(env={}), "cpu").cache_rows == 4  # budget unknown: one per slot


def test_loaded_engine_keeps_the_planned_prefix_cache(tiny_llama: Path) -> None:
    from djl_python.loader import load_engine

    props = {"device": "cpu", "max_rolling_batch_size": "3", "n_positions": "64", "memory_budget": "8GiB"}
    engine = load_engine(load_config(tiny_llama, properties=props, env={}))
    assert engine.limits.prefix_cache_rows == 3 and engine.prefix_cache is not None
    assert engine.backend.info.extra["kv_cache_bytes"] == 6 * 64 * 2 * 2 * 2 * 16 * 4  # 3 slots + 3 rows
    off = load_engine(load_config(tiny_llama, properties={**props, "enable_prefix_caching": "false"}, env={}))
    assert off.limits.prefix_cache_rows == 0 and off.prefix_cache is None


def test_models_on_the_hugging_face_forward_keep_a_planned_prefix_cache_too(tmp_path: Path) -> None:
    """A config the native forward refuses (a GPT-2 scaling attention per layer) runs the Hugging Face
    forward, with its prefix cache planned as the native forward's."""
    from transformers import AutoModelForCausalLM

    from djl_python.loader import load_engine
    from tests.models import make_tokenizer, tiny_config

    config = tiny_config("gpt2")
    config.scale_attn_by_inverse_layer_idx = True
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path))
    make_tokenizer(tmp_path)
    props = {"device": "cpu", "max_rolling_batch_size": "2", "n_positions": "64", "memory_budget": "8GiB"}
    engine = load_engine(load_config(tmp_path, properties=props, env={}))
    assert engine.backend.info.extra["forward"] == "hf"
    assert "scale per layer" in engine.backend.info.extra["native_skipped"]
    assert engine.limits.prefix_cache_rows == 2 and engine.prefix_cache is not None
