"""One test per finding of the first Neuron source review, each against the double's emulation of
the release that shows it.

Sources are cited per test (aws-neuron/transformers-neuronx commit, path). The
staggered-requests equivalence over every architecture and release is in
``test_neuron_equivalence.py``; these pin each behaviour down on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from djl_python.backends.neuron.versions import NeuronVersionError
from djl_python.config import ConfigError
from tests.models import dtype_kwargs
from tests.neuron.conftest import load_neuron


def logits_of(model_dir: Path, tokens: list[int]) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1]


def pretrained_call(tnx) -> tuple:
    (call,) = tnx.events("from_pretrained")
    return call


# -- 1. GPT-2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("tnx", ["0.9", "0.13"], indirect=True)
def test_gpt2_uses_gpt2_for_sampling_and_prefills_different_prompts(tiny_model_factory, tnx) -> None:
    """gpt2/model.py (8b01968, 1ade6d7): the auto class's GPT2ForSamplingWithContextBroadcasting has
    ``reset(context_length_estimate)`` and broadcasts one prompt; GPT2ForSampling is what DJL/optimum load."""
    model_dir = tiny_model_factory("gpt2")
    backend = load_neuron(model_dir, max_rolling_batch_size=2, n_positions=64)
    assert pretrained_call(tnx)[1] == "GPT2ForSampling"
    a, b = [5, 6, 7], [9, 10]
    logits = backend.prefill([0, 1], [a, b])
    assert torch.allclose(logits[0], logits_of(model_dir, a), atol=1e-4)
    assert torch.allclose(logits[1], logits_of(model_dir, b), atol=1e-4)


# -- 2. GPT-J ------------------------------------------------------------------------------------
def test_gptj_runs_one_row_at_a_time(tiny_model_factory, tnx, caplog) -> None:
    """gptj/hlo.py (8b01968 .. 1ade6d7): the mask is decoder_attention_mask_legacy(cache_offset), causal
    only; a left-padded shorter row would attend its padding, so GPT-J gets one KV row."""
    with caplog.at_level("WARNING"):
        backend = load_neuron(tiny_model_factory("gptj"), max_rolling_batch_size=4, n_positions=64)
    assert backend.limits.max_slots == 1 and pretrained_call(tnx)[3]["batch_size"] == 1
    assert backend.info.extra["strategy"] == "single_row" and "one row at a time" in caplog.text
    with pytest.raises(NeuronVersionError, match="no continuous batching for 'gptj'"):
        load_neuron(tiny_model_factory("gptj"), max_rolling_batch_size=4, n_positions=64,
                    rolling_batch_strategy="continuous_batching")


def test_double_gptj_attends_left_padding(tiny_model_factory, tnx) -> None:
    """The double does what the hardware does: two rows of different lengths, left-padded, give the
    shorter row the logits of its padding plus its tokens (so batching GPT-J rows is wrong)."""
    from transformers_neuronx.gptj.model import GPTJForSampling

    model_dir = tiny_model_factory("gptj")
    model = GPTJForSampling.from_pretrained(str(model_dir), batch_size=2, n_positions=64)
    model.to_neuron()
    pad = 0
    out = model.forward(torch.tensor([[5, 6, 7], [pad, 9, 10]]), None, torch.tensor([0, 1]))
    assert torch.allclose(out[1], logits_of(model_dir, [pad, 9, 10]), atol=1e-4)
    assert not torch.allclose(out[1], logits_of(model_dir, [9, 10]), atol=1e-3)


@pytest.mark.parametrize(("arch", "option"), [("gpt_neox", {"unroll": 2}), ("gpt_neox", {"quantize": "static_int8"}),
                                              ("gptj", {"quantize": "static_int8"})])
def test_old_generation_constructor_rules_are_named_up_front(tiny_model_factory, tnx, arch, option) -> None:
    """gptneox/model.py, gptj/model.py (8b01968 .. 1ade6d7) raise NotImplementedError after the config loaded;
    the option is refused by name before anything is built."""
    dtype = {"dtype": "fp32"} if arch == "gpt_neox" else {}
    with pytest.raises(NeuronVersionError, match=f"option.{next(iter(option))}"):
        load_neuron(tiny_model_factory(arch), n_positions=64, **dtype, **option)
    assert tnx.events("from_pretrained") == []


# -- 3. naive re-prefill cache_ids ---------------------------------------------------------------------
@pytest.mark.parametrize("tnx", ["0.9", "0.10-early"], indirect=True)
def test_naive_reprefill_passes_no_cache_ids(tiny_model_factory, tnx) -> None:
    """base._prepare_for_par_ctx_rhs_padding (8b01968, 7a30b42) pads input_ids to the context bucket but
    not explicit cache_ids: we pass None, as DJL's get_cache_ids(prefill=True) does. BLOOM: it takes
    a list of prefill buckets on both releases (OPT only from 0.10)."""
    model_dir = tiny_model_factory("bloom")
    backend = load_neuron(model_dir, max_rolling_batch_size=2, n_positions=64, context_length_estimate="16,64")
    prompt = [5, 17, 42]
    assert torch.allclose(backend.prefill([0], [prompt])[0], logits_of(model_dir, prompt), atol=1e-4)
    assert {b for _, b in tnx.events("context_bucket")} == {16}


# -- 4. continuous batching on early 0.10 ----------------------------------------------------------------
@pytest.mark.parametrize("tnx", ["0.10-early"], indirect=True)
def test_early_continuous_batching_one_row_prefill_answers_at_its_last_token(tiny_llama, tnx) -> None:
    """7a30b42: a one-row prefill answers at min(width, bucket) - 1 for the batch (scalar last_token_id),
    and from_pretrained asserts context_length_estimate == n_positions == [n]."""
    backend = load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64)
    kwargs = pretrained_call(tnx)[3]
    assert kwargs["context_length_estimate"] == kwargs["n_positions"] == [64]
    prompt = [5, 17, 42, 99, 7]
    assert torch.allclose(backend.prefill([1], [prompt])[0], logits_of(tiny_llama, prompt), atol=1e-4)
    with pytest.raises(NeuronVersionError, match="one context bucket equal to n_positions=64"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, context_length_estimate="16,64")


@pytest.mark.parametrize(("tnx", "buckets"), [("0.10-early", [4096]), ("0.10-late", [128, 1024, 2048, 4096])],
                         indirect=["tnx"])
def test_default_continuous_batching_buckets(tiny_model_factory, tnx, buckets) -> None:
    """DJL's default context buckets (afece25d build_context_length_estimates) where the
    installed NeuronConfig has vectorize_last_token_id (0623de2); one bucket before it."""
    from djl_python.backends.neuron.load import decide_plans
    from djl_python.backends.neuron.loader import import_features
    from djl_python.artifacts import resolve_artifacts
    from tests.neuron.conftest import make_config

    config = make_config(tiny_model_factory("llama"), max_rolling_batch_size=2, n_positions=4096)
    _, features = import_features()
    (plan,) = decide_plans(config, resolve_artifacts(config), features)
    assert plan.model_kwargs["context_length_estimate"] == buckets and plan.prefill_buckets == buckets


# -- 5. checkpoint formats --------------------------------------------------------------------------
@pytest.fixture
def sharded_llama(tiny_llama: Path, tmp_path: Path) -> Path:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), **dtype_kwargs(torch.float32))
    out = tmp_path / "sharded"
    model.save_pretrained(str(out), max_shard_size="20KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (tiny_llama / name).is_file():
            shutil.copy2(tiny_llama / name, out / name)
    assert (out / "model.safetensors.index.json").is_file()
    return out


@pytest.mark.parametrize("tnx", ["0.9"], indirect=True)
def test_sharded_checkpoint_refused_before_0_10(sharded_llama: Path, tnx) -> None:
    """module.py 8b01968 reads model.safetensors / pytorch_model.bin only (FileNotFoundError after the
    model was built); we refuse up front naming the fix."""
    with pytest.raises(NeuronVersionError, match="sharded checkpoint.*0.9.*>= 0.10"):
        load_neuron(sharded_llama, max_rolling_batch_size=2, n_positions=64)
    assert tnx.events("from_pretrained") == []


@pytest.mark.parametrize("tnx", ["0.10-early"], indirect=True)
def test_sharded_checkpoint_loads_from_0_10(sharded_llama: Path, tnx) -> None:
    backend = load_neuron(sharded_llama, max_rolling_batch_size=2, n_positions=64)
    prompt = [5, 6, 7]
    assert torch.allclose(backend.prefill([0], [prompt])[0], logits_of(sharded_llama, prompt), atol=1e-4)


# -- 6. optimum-neuron exports ------------------------------------------------------------------------
def export_like_optimum_v0_0_22(model_dir: Path, out: Path) -> Path:
    """An export as optimum-neuron v0.0.22 made it (modeling_decoder.py: NeuronConfig(continuous_batching=...,
    attention_layout=BSH) for llama, n_positions=[seq], context_length_estimate=[seq]), built with the double."""
    from transformers_neuronx.config import ContinuousBatchingConfig, NeuronConfig
    from transformers_neuronx.llama.model import LlamaForSampling

    shutil.copytree(model_dir, out / "checkpoint")
    model = LlamaForSampling.from_pretrained(
        str(out / "checkpoint"), batch_size=2, n_positions=[64], context_length_estimate=[64], tp_degree=2,
        amp="f16", neuron_config=NeuronConfig(continuous_batching=ContinuousBatchingConfig(
            batch_size_for_shared_caches=2), attention_layout="BSH"))
    model.to_neuron()
    model.save(str(out / "compiled"))
    config = json.loads((model_dir / "config.json").read_text())
    config["neuron"] = {"task": "text-generation", "batch_size": 2, "num_cores": 2, "auto_cast_type": "fp16",
                        "sequence_length": 64, "compiler_type": "neuronx-cc", "compiler_version": "2.13.66.0",
                        "checkpoint_id": None, "checkpoint_revision": None}
    (out / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(model_dir / name, out / name)
    return out


def test_optimum_export_of_another_era_loads_its_graphs(tiny_llama: Path, tnx, tmp_path: Path, caplog) -> None:
    export = export_like_optimum_v0_0_22(tiny_llama, tmp_path / "export")
    tnx.CALLS.clear()
    with caplog.at_level("WARNING"):
        backend = load_neuron(export)
    assert tnx.events("to_neuron")[-1][2] == "loaded"  # the v0.0.22-23 candidate matched; nothing compiled
    assert "optimum v0.0.25-28" in caplog.text and backend.info.extra["strategy"] == "continuous_batching"
    prompt = [5, 6, 7]
    assert torch.allclose(backend.prefill([0], [prompt])[0], logits_of(tiny_llama, prompt), atol=1e-4)


# -- 7. layouts, presharded and DJL-partitioned folders --------------------------------------------------
def test_bsh_cache_layout_needs_continuous_batching(tiny_model_factory, tnx) -> None:
    """module.py _sanity_check (7a30b42 on): "BSH cache layout can only be configured with continuous batching"."""
    with pytest.raises(ConfigError, match="option.cache_layout"):
        load_neuron(tiny_model_factory("opt"), max_rolling_batch_size=2, n_positions=64, cache_layout="BSH")
    assert tnx.events("from_pretrained") == []


def test_bsh_cache_layout_takes_one_bucket(tiny_llama: Path, tnx) -> None:
    """0623de2 .. 1ade6d7 _sanity_check: "BSH cache layout does not support multi-bucketing"."""
    with pytest.raises(ConfigError, match="cache_layout"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, cache_layout="BSH",
                    context_length_estimate="16,64")
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=256, cache_layout="BSH")
    assert pretrained_call(tnx)[3]["context_length_estimate"] == [256]


def test_layout_values(tiny_llama: Path, tnx) -> None:
    """config.py docstrings: attention/collectives layouts are HSB or BSH (SBH is a cache layout)."""
    with pytest.raises(ConfigError, match="attention_layout"):
        load_neuron(tiny_llama, n_positions=64, attention_layout="SBH")


def djl_partitioned(model_dir: Path, out: Path, *, on_device_embedding: bool) -> Path:
    """DJL's partitioned folder (afece25d TNXModelLoader.safetensors_partition/compile_and_save): config.json with
    a neuron block, compiled/ holding the graphs and presharded weights (save(dir, sharded_weights=True),
    1ade6d7), no checkpoint/."""
    from transformers_neuronx.config import ContinuousBatchingConfig, NeuronConfig
    from transformers_neuronx.llama.model import LlamaForSampling

    kwargs = {"continuous_batching": ContinuousBatchingConfig(batch_size_for_shared_caches=2)}
    if on_device_embedding:
        kwargs["on_device_embedding"] = True
    model = LlamaForSampling.from_pretrained(str(model_dir), batch_size=2, n_positions=[64],
                                             context_length_estimate=[64], tp_degree=2, amp="f16",
                                             neuron_config=NeuronConfig(**kwargs))
    model.to_neuron()
    model.save(str(out / "compiled"), sharded_weights=True)
    config = json.loads((model_dir / "config.json").read_text())
    config["neuron"] = {"auto_cast_type": "fp16", "batch_size": 2, "compiler_type": "neuronx-cc",
                        "compiler_version": "2.13.66.0", "num_cores": 2, "sequence_length": 64}
    (out / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(model_dir / name, out / name)
    return out


def test_djl_partitioned_folder_loads_its_presharded_weights(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    folder = djl_partitioned(tiny_llama, tmp_path / "djl", on_device_embedding=True)
    (tmp_path / "embedding.json").write_text(json.dumps({"on_device_embedding": True}))
    tnx.CALLS.clear()
    backend = load_neuron(folder, rolling_batch_strategy="continuous_batching",
                          on_device_embedding_config=tmp_path / "embedding.json")
    assert pretrained_call(tnx)[2] == str(folder / "compiled") and tnx.events("to_neuron")[-1][2] == "loaded"
    prompt = [5, 6, 7]
    assert torch.allclose(backend.prefill([0], [prompt])[0], logits_of(tiny_llama, prompt), atol=1e-4)


def test_a_folder_lmi_partitioned_loads_with_the_same_properties(tiny_llama: Path, tnx, tmp_path: Path,
                                                                   caplog) -> None:
    """LMI >= 0.30 turns on_device_embedding on for a config.json with a neuron block (djl-serving afece25d
    neuron_smart_default_utils.py:88-91) and compiled its partitioned folders so: the same serving.properties,
    which do not name it, must load the saved graphs rather than refuse or recompile."""
    folder = djl_partitioned(tiny_llama, tmp_path / "djl", on_device_embedding=True)
    tnx.CALLS.clear()
    with caplog.at_level("INFO"):
        backend = load_neuron(folder, rolling_batch_strategy="continuous_batching")
    assert tnx.events("to_neuron")[-1][2] == "loaded" and not tnx.events("compile")
    assert "'on_device_embedding': True" in caplog.text
    assert backend.plan.neuron_options["on_device_embedding"] is True


def test_presharded_weights_need_on_device_embedding(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    folder = djl_partitioned(tiny_llama, tmp_path / "djl", on_device_embedding=True)
    with pytest.raises(NeuronVersionError, match="option.on_device_embedding"):
        load_neuron(folder, rolling_batch_strategy="continuous_batching", on_device_embedding="false")


@pytest.mark.parametrize("tnx", ["0.11"], indirect=True)
def test_presharded_weights_need_a_release_that_reads_them(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    (tmp_path / "djl" / "compiled").mkdir(parents=True)
    (tmp_path / "djl" / "compiled" / "0.neff").write_bytes(b"x")
    (tmp_path / "djl" / "compiled" / "config.json").write_text(json.dumps({"is_presharded_checkpoint": True}))
    config = json.loads((tiny_llama / "config.json").read_text())
    config["neuron"] = {"auto_cast_type": "fp16", "batch_size": 2, "num_cores": 2, "sequence_length": 64}
    (tmp_path / "djl" / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_llama / name, tmp_path / "djl" / name)
    with pytest.raises(NeuronVersionError, match="presharded weights.*0.11 cannot load"):
        load_neuron(tmp_path / "djl")


# -- 8. full-batch decode -------------------------------------------------------------------------------
def test_continuous_batching_decode_must_list_every_occupied_slot(tiny_llama: Path, tnx) -> None:
    backend = load_neuron(tiny_llama, max_rolling_batch_size=3, n_positions=64)
    backend.prefill([0, 1], [[5, 6, 7], [9, 10]])
    with pytest.raises(ValueError, match=r"every occupied slot; \[1\] left out"):
        backend.decode([0], [11], [3])
    backend.release(1)
    backend.decode([0], [11], [3])  # a released slot may be left out: its row is rewritten on reuse


def test_double_full_batch_decode_overwrites_unlisted_slots(tiny_llama: Path, tnx) -> None:
    """base._prepare_for_continuous_batching (every release): a decode runs the full batch, token 0 at
    cache position 0 for each slot not listed. The double does it, so a subset decode corrupts a slot."""
    backend = load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64)
    backend.prefill([0, 1], [[5, 6, 7], [9, 10]])
    model = backend.model
    model.forward(torch.tensor([[11]]), torch.tensor([[3]]), torch.tensor([0]))  # slot 1 not listed
    assert tnx.events("cb_decode_unlisted") == [("cb_decode_unlisted", (1,))]
    assert model.device.rows[1][0] == 0  # its first token is gone
    out = model.forward(torch.tensor([[12], [13]]), torch.tensor([[4], [2]]), torch.tensor([0, 1]))
    assert not torch.allclose(out[1], logits_of(tiny_llama, [9, 10, 13]), atol=1e-3)


# -- 9. smaller -----------------------------------------------------------------------------------------
def test_visible_cores_bound_the_tensor_parallel_degree(tiny_llama: Path, tnx, monkeypatch) -> None:
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "4-5")
    load_neuron(tiny_llama, n_positions=64, tensor_parallel_degree="max")
    assert pretrained_call(tnx)[3]["tp_degree"] == 2
    with pytest.raises(ConfigError, match="option.tensor_parallel_degree.*NEURON_RT_VISIBLE_CORES=4-5"):
        load_neuron(tiny_llama, n_positions=64, tensor_parallel_degree=4)


@pytest.mark.parametrize("tnx", ["0.9", "0.13"], indirect=True)
def test_naive_prompt_longer_than_the_largest_bucket(tiny_model_factory, tnx) -> None:
    """base.context (8b01968 .. 1ade6d7): a static prompt past the largest bucket runs that bucket, then the
    rest one token at a time; so the naive strategy accepts prompts up to n_positions."""
    model_dir = tiny_model_factory("bloom")
    backend = load_neuron(model_dir, max_rolling_batch_size=2, n_positions=64, context_length_estimate="8,16")
    assert backend.limits.max_prompt_len == 64
    prompt = list(range(5, 45))
    assert torch.allclose(backend.prefill([0], [prompt])[0], logits_of(model_dir, prompt), atol=1e-4)


@pytest.mark.parametrize("tnx", ["0.10-early", "0.10-late", "0.11"], indirect=True)
def test_naive_history_one_past_the_largest_bucket(tiny_model_factory, tnx) -> None:
    """7a30b42/0623de2 base.context: ``while current < context_length - 1`` never runs a single column left
    after the largest bucket (c8d6bdc: ``< context_length``); the re-prefill runs the bucket, then that column as
    a token step (no padding column)."""
    model_dir = tiny_model_factory("opt")
    backend = load_neuron(model_dir, max_rolling_batch_size=2, n_positions=64, context_length_estimate="8,16")
    prompt = list(range(5, 22))
    assert len(prompt) == 17
    assert torch.allclose(backend.prefill([0], [prompt])[0], logits_of(model_dir, prompt), atol=1e-4)
    assert torch.allclose(backend.decode([0], [30], [17])[0], logits_of(model_dir, prompt + [30]), atol=1e-4)


def test_continuous_batching_prompt_past_the_largest_bucket_is_refused(tiny_llama: Path, tnx) -> None:
    """0623de2 .. 1ade6d7 _prepare_for_continuous_batching asserts the prompt fits a context bucket."""
    backend = load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, context_length_estimate="8,16")
    assert backend.limits.max_prompt_len == 16
    with pytest.raises(ValueError, match="exceeds the largest prefill bucket 16"):
        backend.prefill([0], [list(range(5, 25))])


def test_s3_compiled_graph_path_receives_compiled_graphs(tiny_llama: Path, tnx, tmp_path: Path, monkeypatch) -> None:
    import boto3
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DJL_CACHE_DIR", str(tmp_path / "cache"))
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="graphs")
        boto3.client("s3").put_object(Bucket="graphs", Key="llama/README", Body=b"neff cache")

        def compile_into_cache(self) -> None:  # what neuronx-cc does: fill NEURON_COMPILE_CACHE_URL
            import os

            cache = Path(os.environ["NEURON_COMPILE_CACHE_URL"])
            (cache / "neuronxcc-2.13" / "MODULE_1").mkdir(parents=True, exist_ok=True)
            (cache / "neuronxcc-2.13" / "MODULE_1" / "model.neff").write_bytes(b"neff")
            original(self)

        from transformers_neuronx import _runtime

        original = _runtime.CompiledModel.to_neuron
        monkeypatch.setattr(_runtime.CompiledModel, "to_neuron", compile_into_cache)
        load_neuron(tiny_llama, n_positions=64, compiled_graph_path="s3://graphs/llama")
        keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="graphs")["Contents"]}
    assert "llama/neuronxcc-2.13/MODULE_1/model.neff" in keys


# -- second review, finding 3: OPT on 0.9 takes no list of prefill buckets ---------------------------
@pytest.mark.parametrize(("tnx", "passed"), [("0.9", False), ("0.10-early", True)], indirect=["tnx"])
def test_opt_context_buckets_are_passed_only_where_opt_takes_a_list(tiny_model_factory, tnx, passed, caplog) -> None:
    """8b01968 opt/model.py:79-97 wraps one int as ``[context_length_estimate]``: the list the
    configuration holds fails in to_neuron(), and 0.9's forward() never runs that graph. From 0.10
    (7a30b42 opt/model.py:64-65) OPT takes buckets. Static batching (OPT has no CB)."""
    model_dir = tiny_model_factory("opt")
    with caplog.at_level("WARNING"):
        backend = load_neuron(model_dir, max_rolling_batch_size=2, n_positions=64, context_length_estimate="16,32")
    kwargs = pretrained_call(tnx)[-1]
    assert (kwargs.get("context_length_estimate") == [16, 32]) == passed, kwargs
    assert ("option.context_length_estimate is ignored" in caplog.text) == (not passed), caplog.text
    a = [5, 6, 7]
    logits = backend.prefill([0], [a])
    assert torch.allclose(logits[0], logits_of(model_dir, a), atol=1e-4)


# -- independent review (docs/neuron.md "Reviews"): plans this backend did not build ---------------------
def export_like_optimum(model_dir: Path, out: Path, *, arch_class: str, batch: int, continuous: bool) -> Path:
    """An export as optimum-neuron v0.0.17-18 (no NeuronConfig: static batching) or v0.0.19-21 (continuous
    batching, n_positions=[seq], context_length_estimate=[seq]) made it, built with the double."""
    import importlib

    from transformers_neuronx.config import ContinuousBatchingConfig, NeuronConfig

    package, name = arch_class.split(".")
    cls = getattr(importlib.import_module(f"transformers_neuronx.{package}.model"), name)
    shutil.copytree(model_dir, out / "checkpoint")
    kwargs = dict(batch_size=batch, tp_degree=2, amp="f16")
    if continuous:
        kwargs.update(n_positions=[64], context_length_estimate=[64], neuron_config=NeuronConfig(
            continuous_batching=ContinuousBatchingConfig(batch_size_for_shared_caches=batch)))
    else:
        kwargs.update(n_positions=64)
    model = cls.from_pretrained(str(out / "checkpoint"), **kwargs)
    model.to_neuron()
    model.save(str(out / "compiled"))
    config = json.loads((model_dir / "config.json").read_text())
    config["neuron"] = {"task": "text-generation", "batch_size": batch, "num_cores": 2, "auto_cast_type": "fp16",
                        "sequence_length": 64, "compiler_type": "neuronx-cc", "compiler_version": "2.13.66.0"}
    (out / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(model_dir / name, out / name)
    return out


@pytest.mark.parametrize("tnx", ["0.9", "0.10-late"], indirect=True)
def test_a_static_llama_export_is_not_served_as_nan(tiny_llama: Path, tnx, tmp_path: Path, caplog) -> None:
    """A v0.0.17-style llama export of batch 2 matches the static candidate, whose left-padded rows answer NaN
    before 0.11 (transformers-neuronx#79): that candidate is refused by name and a safe one is compiled."""
    export = export_like_optimum(tiny_llama, tmp_path / "export", arch_class="llama.LlamaForSampling", batch=2,
                                 continuous=False)
    with caplog.at_level("WARNING"):
        backend = load_neuron(export)
    assert "optimum v0.0.17-18" in caplog.text and "NaN" in caplog.text
    assert backend.info.extra["strategy"] == "continuous_batching"
    logits = backend.prefill([0, 1], [[5, 6, 7], [9, 10]])
    assert torch.allclose(logits[0], logits_of(tiny_llama, [5, 6, 7]), atol=1e-4)
    assert torch.allclose(logits[1], logits_of(tiny_llama, [9, 10]), atol=1e-4)


@pytest.mark.parametrize("tnx", ["0.10-late"], indirect=True)
def test_a_continuous_mistral_export_is_not_served_where_it_crashes(tiny_model_factory, tnx, tmp_path: Path) -> None:
    """0623de2's Mistral breaks continuous batching (its per-row counter): the export's candidate is refused and
    the static one compiled, which prefills one row."""
    mistral = tiny_model_factory("mistral")
    export = export_like_optimum(mistral, tmp_path / "export", arch_class="mistral.MistralForSampling", batch=2,
                                 continuous=True)
    backend = load_neuron(export)
    assert backend.info.extra["strategy"] != "continuous_batching"
    assert torch.allclose(backend.prefill([0], [[5, 6, 7]])[0], logits_of(mistral, [5, 6, 7]), atol=1e-4)


@pytest.mark.parametrize("tnx", ["0.11"], indirect=True)
def test_buckets_longer_than_the_default_n_positions_are_refused(tiny_llama: Path, tnx) -> None:
    """1ade6d7 module.py:401-406 asserts it at from_pretrained; earlier releases build a context graph longer
    than the KV cache. The default n_positions counts as much as a configured one."""
    limit = json.loads((tiny_llama / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(ConfigError, match="option.context_length_estimate.*n_positions"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, context_length_estimate=f"16,{limit * 2}")
    assert not tnx.events("from_pretrained")


@pytest.mark.parametrize("tnx", ["0.9", "0.10-early", "0.10-late"], indirect=True)
def test_a_batch_one_llama_export_answers_past_its_largest_bucket(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    """A v0.0.17-style batch-1 export has TNX's default context bucket (n_positions // 2): a prompt one past it
    is re-prefilled as that bucket plus one token step, never with a left-padding column (whose start_ids of 1
    answer NaN for Llama before 0.11, transformers-neuronx#79)."""
    export = export_like_optimum(tiny_llama, tmp_path / "export", arch_class="llama.LlamaForSampling", batch=1,
                                 continuous=False)
    backend = load_neuron(export)
    prompt = list(range(5, 38))
    assert len(prompt) == 33
    logits = backend.prefill([0], [prompt])[0]
    assert torch.allclose(logits, logits_of(tiny_llama, prompt), atol=1e-4) and not tnx.events("masked_static_nan")
