"""What reaches transformers-neuronx: ``from_pretrained`` kwargs and ``NeuronConfig``, per option and version."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from djl_python.backends.neuron.loader import NeuronLoadTimeout, import_tnx, model_class
from djl_python.backends.neuron.versions import NeuronVersionError
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


@pytest.mark.parametrize("tnx", ["0.9"], indirect=True)
def test_old_version_reports_unknown_option(tiny_llama: Path, tnx) -> None:
    # 8b01968 NeuronConfig(**kargs) would silently DROP cache_layout; we refuse it by name instead.
    with pytest.raises(NeuronVersionError) as err:
        load_neuron(tiny_llama, max_rolling_batch_size=1, n_positions=64, cache_layout="SBH")
    message = str(err.value)
    assert "option.cache_layout" in message and "0.10" in message and "installed transformers-neuronx 0.9" in message
    assert tnx.events("from_pretrained") == []  # refused before anything was built


@pytest.mark.parametrize("tnx", ["0.10-late"], indirect=True)
def test_legacy_version_gets_string_layouts(tiny_llama: Path, tnx) -> None:
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, attention_layout="BSH")
    recorded = recorded_neuron_config(tnx)
    assert recorded["attention_layout"] == "BSH" and recorded["continuous_batching"].batch_size_for_shared_caches == 2


@pytest.mark.parametrize("tnx", ["0.9", "0.10-early", "0.10-late"], indirect=True)
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_llama_and_mistral_roll_with_continuous_batching_from_0_9(tiny_model_factory, tnx, arch) -> None:
    """Static batching of llama returns NaN before 0.11 (the double does too): the automatic
    choice is continuous batching on every release that has it, 0.9 on, except mistral on the
    late 0.10, whose per-row window counter breaks it (0623de2 mistral/model.py:68-72, 151)."""
    from djl_python.backends.neuron.versions import NeuronVersionError

    model = tiny_model_factory(arch)
    late_010_mistral = arch == "mistral" and tnx.RELEASE.label == "0.10-late"
    backend = load_neuron(model, max_rolling_batch_size=2, n_positions=64)
    assert backend.info.extra["strategy"] == ("naive_rolling_batch" if late_010_mistral else "continuous_batching")
    if late_010_mistral:
        with pytest.raises(NeuronVersionError, match="late 0.10"):
            load_neuron(model, max_rolling_batch_size=2, n_positions=64, rolling_batch_strategy="continuous_batching")
    else:
        assert recorded_neuron_config(tnx)["continuous_batching"].batch_size_for_shared_caches == 2


def test_class_selection(tnx) -> None:
    tnx_module, version = import_tnx()
    assert model_class(tnx_module, version, "llama") is tnx_module.NeuronAutoModelForCausalLM
    # The auto class maps gpt2 to the context-broadcasting class; we load GPT2ForSampling.
    assert model_class(tnx_module, version, "gpt2").__name__ == "GPT2ForSampling"


@pytest.mark.parametrize("tnx", ["0.9"], indirect=True)
def test_class_selection_without_auto_class(tnx) -> None:
    tnx_module, version = import_tnx()
    assert not hasattr(tnx_module, "NeuronAutoModelForCausalLM")
    assert model_class(tnx_module, version, "llama").__name__ == "LlamaForSampling"
    assert model_class(tnx_module, version, "mixtral").__name__ == "MixtralForSampling"  # 8b01968 has mixtral/


@pytest.mark.parametrize("tnx", ["0.8"], indirect=True)
def test_0_8_is_refused_naming_the_supported_range(tiny_llama: Path, tnx) -> None:
    """0.8 (90c7199) has no top-level NeuronConfig & co.; the minimum is 0.9, said up front."""
    with pytest.raises(NeuronVersionError, match=r"0\.8 is too old; this backend supports >= 0\.9"):
        load_neuron(tiny_llama, n_positions=64)
    assert tnx.events("from_pretrained") == []


def test_gpt_bigcode_is_a_clear_error(tiny_model_factory, tnx) -> None:
    with pytest.raises(NeuronVersionError) as err:
        load_neuron(tiny_model_factory("gpt_bigcode"), n_positions=64)
    assert "gpt_bigcode" in str(err.value) and "llama (>=0.9" in str(err.value) and "device=cpu" in str(err.value)


def test_gpt_neox_needs_fp32(tiny_model_factory, tnx) -> None:
    neox = tiny_model_factory("gpt_neox")
    with pytest.raises(NeuronVersionError, match="option.dtype=fp16"):
        load_neuron(neox, n_positions=64, dtype="fp16")
    load_neuron(neox, n_positions=64)
    assert pretrained_kwargs(tnx)["amp"] == "f32"


def test_load_timeout_names_the_option(tiny_llama: Path, tnx, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers_neuronx import _runtime

    monkeypatch.setattr(_runtime.CompiledModel, "to_neuron", lambda self: time.sleep(3))
    with pytest.raises(NeuronLoadTimeout) as err:
        load_neuron(tiny_llama, n_positions=64, model_loading_timeout=1)
    assert "option.model_loading_timeout=1" in str(err.value) and "djl-partition" in str(err.value)


def test_compile_keeps_the_working_directory_and_applies_the_environment(tiny_llama: Path, tnx,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No process-wide os.chdir from the loading thread (the server's other threads share it)."""
    from transformers_neuronx import _runtime

    seen: dict[str, str] = {}
    original = _runtime.CompiledModel.to_neuron

    def to_neuron(self) -> None:
        seen["cwd"], seen["flags"] = os.getcwd(), os.environ.get("NEURON_CC_FLAGS", "")
        original(self)

    monkeypatch.setattr(_runtime.CompiledModel, "to_neuron", to_neuron)
    monkeypatch.setenv("NEURON_CC_FLAGS", "--verbose")
    before = os.getcwd()
    load_neuron(tiny_llama, n_positions=64, neuron_optimize_level=2)
    assert seen["cwd"] == before and os.getcwd() == before
    assert seen["flags"].split() == ["--verbose", "-O2"]


def test_optimum_export_candidates_follow_each_optimum_era() -> None:
    """The arguments per optimum-neuron era (modeling_decoder.py / model_configs at each tag)."""
    from djl_python.backends.neuron.plan import plans_from_optimum_block
    from djl_python.backends.neuron.versions import TnxFeatures

    features = TnxFeatures((0, 10), vectorized_last_token=True, layout_enum=False, presharded=False)
    block = {"batch_size": 4, "num_cores": 2, "sequence_length": 2048, "auto_cast_type": "bf16"}
    llama = plans_from_optimum_block(block, "llama", features)
    seen = [(p.variant, p.strategy, p.neuron_options) for p in llama]
    assert seen == [
        ("optimum v0.0.25-28", "continuous_batching",
         {"attention_layout": "BSH", "fuse_qkv": True, "continuous_batching": 4}),
        ("optimum v0.0.24", "continuous_batching", {"attention_layout": "BSH", "continuous_batching": 4}),
        ("optimum v0.0.19-21", "continuous_batching", {"continuous_batching": 4}),
        ("optimum v0.0.17-18", "naive_rolling_batch", {}),
    ]
    assert llama[0].model_kwargs == {"batch_size": 4, "amp": "bf16", "tp_degree": 2, "n_positions": [2048],
                                     "context_length_estimate": [2048]}
    assert llama[-1].model_kwargs["n_positions"] == 2048
    # Mistral: continuous batching from v0.0.19 whatever the TNX release (0.10 included); mixtral only in
    # v0.0.22-23; GPT-2 never.
    assert plans_from_optimum_block(block, "mistral", features)[0].strategy == "continuous_batching"
    mixtral = plans_from_optimum_block(block, "mixtral", features)
    assert [p.variant for p in mixtral if p.strategy == "continuous_batching"] == ["optimum v0.0.22-23"]
    assert {p.strategy for p in plans_from_optimum_block(block, "gpt2", features)} == {"naive_rolling_batch"}


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


@pytest.mark.parametrize("tnx", ["0.9", "0.10-late", "0.11"], indirect=True)
def test_llama_naive_batching_never_sends_left_padded_rows_before_0_11(tiny_model_factory, tnx) -> None:
    """The double answers NaN for llama's left-padded static rows before 0.11 (transformers-neuronx#79):
    an explicit naive strategy is served one row at a time there, and generates what HF generates."""
    import math

    from djl_python.backends.neuron.plan import SINGLE_ROW

    llama = tiny_model_factory("llama")
    backend = load_neuron(llama, max_rolling_batch_size=2, n_positions=64, rolling_batch_strategy="naive_rolling_batch")
    before_fix = tnx.RELEASE.label != "0.11"
    assert (backend.info.extra["strategy"] == SINGLE_ROW) == before_fix
    logits = backend.prefill([0], [[5, 6, 7, 8]])
    assert not any(math.isnan(v) for v in logits.flatten().tolist())


@pytest.mark.parametrize("tnx", ["0.11", "0.13"], indirect=True)
def test_mistral_positions_stay_within_the_sliding_window(tiny_model_factory, tmp_path, tnx) -> None:
    """Before 0.13 TNX slices attention past sliding_window at a counter that drifts across
    requests (8b01968 mistral/model.py:133-149): the default is capped, a larger setting refused.
    0.13 computes each row's window from its cache_ids (1ade6d7 mistral/hlo.py:200-201)."""
    import json
    import shutil

    from djl_python.config import ConfigError

    mistral = tmp_path / "mistral"  # a copy: the factory's folders are shared and read-only by contract
    shutil.copytree(tiny_model_factory("mistral"), mistral)
    config = json.loads((mistral / "config.json").read_text())
    config["sliding_window"] = 32
    (mistral / "config.json").write_text(json.dumps(config))
    if tnx.RELEASE.label == "0.13":
        assert load_neuron(mistral, max_rolling_batch_size=2, n_positions=64).limits.n_positions == 64
        return
    backend = load_neuron(mistral, max_rolling_batch_size=2)
    assert backend.limits.n_positions == 32
    with pytest.raises(ConfigError, match="option.n_positions.*sliding_window"):
        load_neuron(mistral, max_rolling_batch_size=2, n_positions=64)
def _windowed_mistral(tiny_model_factory, tmp_path, window: int):
    import json
    import shutil

    mistral = tmp_path / "mistral"
    shutil.copytree(tiny_model_factory("mistral"), mistral)
    config = json.loads((mistral / "config.json").read_text())
    config["sliding_window"] = window
    (mistral / "config.json").write_text(json.dumps(config))
    return mistral


@pytest.mark.parametrize("tnx", ["0.10-early", "0.11"], indirect=True)
def test_double_mistral_window_drifts_across_requests(tiny_model_factory, tmp_path, tnx) -> None:
    """The double's Mistral keeps TNX's num_processed_tokens (8b01968 mistral/model.py:133-149): with a
    token bucket longer than sliding_window, a second request's decode attends a slice that starts past
    its own tokens, and its logits go wrong; the first request's early decodes are right."""
    from transformers import AutoModelForCausalLM
    from transformers_neuronx.mistral.model import MistralForSampling

    from tests.models import dtype_kwargs

    mistral = _windowed_mistral(tiny_model_factory, tmp_path, 16)
    model = MistralForSampling.from_pretrained(str(mistral), batch_size=1, n_positions=64, amp="f32")
    model.to_neuron()
    hf = AutoModelForCausalLM.from_pretrained(str(mistral), **dtype_kwargs(torch.float32)).eval()

    def expected(tokens):
        with torch.no_grad():
            return hf(torch.tensor([tokens])).logits[0, -1]

    first = [5, 6, 7, 8]
    model.forward(torch.tensor([first]), None, torch.zeros(1, dtype=torch.int64))
    step = model.forward(torch.tensor([[9]]), torch.tensor([4]), torch.zeros(1, dtype=torch.int64))
    assert torch.allclose(step[0], expected(first + [9]), atol=1e-4)
    for position in range(5, 24):  # the counter passes the window
        model.forward(torch.tensor([[10]]), torch.tensor([position]), torch.zeros(1, dtype=torch.int64))
    if tnx.RELEASE.label == "0.11":
        model.reset()  # c8d6bdc resets the counter; a rolling batch never calls it per request
        model.num_processed_tokens = 24  # what it holds without that reset
    second = [11, 12, 13]
    model.forward(torch.tensor([second]), None, torch.zeros(1, dtype=torch.int64))
    step = model.forward(torch.tensor([[14]]), torch.tensor([3]), torch.zeros(1, dtype=torch.int64))
    assert not torch.allclose(step[0], expected(second + [14]), atol=1e-3)


@pytest.mark.parametrize("tnx", ["0.10-early", "0.11"], indirect=True)
def test_capped_mistral_generates_across_requests(tiny_model_factory, tmp_path, tnx) -> None:
    """With n_positions capped at sliding_window the token bucket never exceeds it: no slice, no drift,
    so staggered requests still equal generate() (the cap is what keeps the double's drift away)."""
    from transformers import AutoModelForCausalLM

    from djl_python.engine import SamplingParams
    from djl_python.engine.engine import Engine
    from djl_python.loader import load_tokenizer
    from tests.models import dtype_kwargs

    mistral = _windowed_mistral(tiny_model_factory, tmp_path, 16)
    backend = load_neuron(mistral, max_rolling_batch_size=1)
    assert backend.limits.n_positions == 16
    engine = Engine(backend, load_tokenizer(str(mistral)))
    hf = AutoModelForCausalLM.from_pretrained(str(mistral), **dtype_kwargs(torch.float32)).eval()
    for prompt in ([5, 6, 7, 8], [11, 12, 13], [20, 21]):
        got = engine.generate([prompt], SamplingParams(max_new_tokens=8, ignore_eos=True))[0].token_ids
        with torch.no_grad():
            want = hf.generate(torch.tensor([prompt]), max_new_tokens=8, min_new_tokens=8, do_sample=False,
                               pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        assert list(got) == want, prompt


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_bsh_continuous_batching_on_0_13_prefills_one_prompt_at_a_time(tiny_llama, tnx) -> None:
    """0.13 concatenates a BSH prefill's prompts into one row that must fit a bucket (1ade6d7
    base.py:513-537; the double asserts it): two long prompts together would not fit."""
    from djl_python.engine import Engine, SamplingParams
    from transformers import AutoTokenizer

    backend = load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, cache_layout="BSH")
    assert backend.info.extra["strategy"] == "continuous_batching"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    engine = Engine(backend, tokenizer)
    prompts = [[5 + i % 50 for i in range(40)], [7 + i % 50 for i in range(40)]]  # 80 tokens > one 64 bucket
    ids = [engine.add_request(p, SamplingParams(max_new_tokens=3)) for p in prompts]
    done: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            done.setdefault(out.request_id, []).extend(out.token_ids)
    assert all(len(done[i]) == 3 for i in ids)


def test_optimum_loaded_model_is_labelled_by_what_was_built(tiny_model_factory, monkeypatch, tnx) -> None:
    """A mixtral that optimum v0.0.22-23 exported with batch > 1 was built with continuous batching;
    the newest era's guess (no mixtral continuous batching) must not label it naive, or its rows
    would get the naive strategy's padding offsets."""
    import dataclasses
    from types import SimpleNamespace

    from djl_python.artifacts import resolve_artifacts
    from djl_python.backends.neuron import load as neuron
    from djl_python.backends.neuron.versions import TnxFeatures
    from tests.neuron.conftest import make_config

    block = {"batch_size": 4, "num_cores": 2, "sequence_length": 64, "auto_cast_type": "f32"}
    built = SimpleNamespace(neuron_config=SimpleNamespace(continuous_batching=SimpleNamespace(batch_size=4)))
    monkeypatch.setattr(neuron, "load_optimum_model",
                        lambda *a, **k: SimpleNamespace(model=built, config=SimpleNamespace(neuron=block)))
    model_dir = tiny_model_factory("llama")
    config = make_config(model_dir, device="neuron", model_loader="optimum")
    artifacts = dataclasses.replace(resolve_artifacts(config), model_type="mixtral", neuron_block=block)
    features = TnxFeatures((0, 10), vectorized_last_token=True, layout_enum=False, presharded=False)
    model, plan = neuron._load_with_optimum(config, artifacts, features, deadline=float("inf"))
    assert model is built and plan.strategy == "continuous_batching"
    unbuilt = SimpleNamespace(neuron_config=SimpleNamespace(continuous_batching=None))
    assert neuron.built_strategy(unbuilt) == "naive_rolling_batch"


@pytest.mark.parametrize("tnx", ["0.9"], indirect=True)
def test_bsh_attention_with_continuous_batching_needs_0_10(tiny_llama, tnx) -> None:
    """8b01968 base.py:323 reads a BSH hidden state as HSB in the multi-row context path."""
    from djl_python.config import ConfigError

    with pytest.raises(ConfigError, match="option.attention_layout"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, attention_layout="BSH")


@pytest.mark.parametrize("tnx", ["0.10-late"], indirect=True)
def test_llama_single_row_is_never_left_padded(tiny_llama, tnx) -> None:
    """A history one past the largest context bucket gets an extra left-padding column on 0.10
    (its leftover loop); for llama's single row that is a NaN (transformers-neuronx#79), so the
    single-row plan compiles a context bucket of n_positions and never needs the column."""
    import math

    prompt = [5 + i % 40 for i in range(33)]  # 64 // 2 + 1: one past TNX's default largest bucket
    backend = load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, rolling_batch_strategy="naive_rolling_batch")
    assert backend.info.extra["strategy"] == "single_row"
    logits = backend.prefill([0], [prompt])
    assert not any(math.isnan(v) for v in logits.flatten().tolist())
    assert not tnx.events("masked_static_nan")


@pytest.mark.parametrize("tnx", ["0.9", "0.10-early"], indirect=True)
def test_mistral_without_sliding_window_needs_0_10(tiny_model_factory, tmp_path, tnx) -> None:
    """8b01968 mistral/model.py:136 computes max(0, n - sliding_window): null fails at the first
    request; 7a30b42 guards it. Refused at load on 0.9, served from 0.10."""
    import json
    import shutil

    mistral = tmp_path / "mistral"
    shutil.copytree(tiny_model_factory("mistral"), mistral)
    config = json.loads((mistral / "config.json").read_text())
    config["sliding_window"] = None
    (mistral / "config.json").write_text(json.dumps(config))
    if tnx.RELEASE.label == "0.9":
        with pytest.raises(NeuronVersionError, match="sliding_window null"):
            load_neuron(mistral, max_rolling_batch_size=2, n_positions=64)
    else:
        assert load_neuron(mistral, max_rolling_batch_size=2, n_positions=64).limits.n_positions == 64


@pytest.mark.parametrize(("model_type", "continuous", "version"), [("mistral", True, (0, 10)),
                                                                   ("llama", False, (0, 10))])
def test_optimum_built_model_that_cannot_serve_safely_is_refused(tiny_model_factory, monkeypatch, tnx,
                                                                 model_type, continuous, version) -> None:
    """model_loader=optimum has no other candidate: a continuous-batching Mistral on late 0.10 (its per-row
    counter breaks a partial prefill) or a static llama batch of 4 before 0.11 (NaN rows) is refused."""
    import dataclasses
    from types import SimpleNamespace

    from djl_python.artifacts import resolve_artifacts
    from djl_python.backends.neuron import load as neuron
    from djl_python.backends.neuron.versions import TnxFeatures
    from tests.neuron.conftest import make_config

    block = {"batch_size": 4, "num_cores": 2, "sequence_length": 64, "auto_cast_type": "f32"}
    cb = SimpleNamespace(batch_size=4) if continuous else None
    built = SimpleNamespace(neuron_config=SimpleNamespace(continuous_batching=cb))
    monkeypatch.setattr(neuron, "load_optimum_model",
                        lambda *a, **k: SimpleNamespace(model=built, config=SimpleNamespace(neuron=block)))
    config = make_config(tiny_model_factory("llama"), device="neuron", model_loader="optimum")
    artifacts = dataclasses.replace(resolve_artifacts(config), model_type=model_type, neuron_block=block)
    features = TnxFeatures(version, vectorized_last_token=True, layout_enum=False, presharded=False)
    with pytest.raises(NeuronVersionError, match="cannot be served safely"):
        neuron._load_with_optimum(config, artifacts, features, deadline=float("inf"))
