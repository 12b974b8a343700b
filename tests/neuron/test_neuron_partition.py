"""Ahead-of-time partitioning and reloading saved graphs (``load()`` before ``to_neuron()``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from djl_python.artifacts import ArtifactError
from djl_python.partition import main as partition_main
from tests.models import dtype_kwargs
from tests.neuron.conftest import load_neuron

PROMPT = [5, 17, 42, 99, 7]


def partition(model_dir: Path, out: Path, *options: str) -> Path:
    argv = ["--model-id", str(model_dir), "--save-mp-checkpoint-path", str(out)]
    for option in options:
        argv += ["--option", option]
    assert partition_main(argv) == 0
    return out


def order(tnx) -> list[tuple]:
    return [(c[0], c[2]) if c[0] == "to_neuron" else (c[0],) for c in tnx.CALLS
            if c[0] in ("from_pretrained", "load", "to_neuron")]


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_partition_reloads_without_compiling(tiny_model_factory, tnx, tmp_path: Path, arch: str) -> None:
    model_dir = tiny_model_factory(arch)
    out = partition(model_dir, tmp_path / "out", "max_rolling_batch_size=2", "n_positions=64",
                    "tensor_parallel_degree=2")
    assert order(tnx) == [("from_pretrained",), ("to_neuron", "compile")]
    assert list((out / "compiled").glob("*.neff")) and (out / "compiled" / "djl_manifest.json").is_file()
    assert list((out / "checkpoint").glob("*.safetensors"))
    block = json.loads((out / "config.json").read_text())["neuron"]
    assert {k: block[k] for k in ("auto_cast_type", "batch_size", "num_cores", "sequence_length", "compiler_type",
                                  "task")} == {"auto_cast_type": "fp16", "batch_size": 2, "num_cores": 2,
                                               "sequence_length": 64, "compiler_type": "neuronx-cc",
                                               "task": "text-generation"}

    tnx.CALLS.clear()
    backend = load_neuron(out)  # nothing configured: the recorded plan is replayed
    assert order(tnx) == [("from_pretrained",), ("load",), ("to_neuron", "loaded")]
    assert tnx.events("load")[0][2] == str(out / "compiled")
    assert backend.limits.max_slots == 2 and backend.limits.n_positions == 64
    reference = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([PROMPT])).logits[0, -1]
    assert torch.allclose(backend.prefill([1], [PROMPT])[0], expected, atol=1e-4)


def test_mismatching_configuration_is_refused_before_loading(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    out = partition(tiny_llama, tmp_path / "out", "max_rolling_batch_size=2", "n_positions=64")
    tnx.CALLS.clear()
    with pytest.raises(ArtifactError, match="max_rolling_batch_size"):
        load_neuron(out, max_rolling_batch_size=4)
    assert tnx.events("from_pretrained") == []


def test_compiled_graph_path_with_neffs_is_loaded_first(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    out = partition(tiny_llama, tmp_path / "out", "max_rolling_batch_size=2", "n_positions=64")
    tnx.CALLS.clear()
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, compiled_graph_path=out / "compiled")
    assert order(tnx) == [("from_pretrained",), ("load",), ("to_neuron", "loaded")]


def test_no_saved_graphs_means_no_load(tiny_llama: Path, tnx) -> None:
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64)
    assert order(tnx) == [("from_pretrained",), ("to_neuron", "compile")]


def test_stale_graphs_are_recompiled_with_a_warning(tiny_llama: Path, tnx, tmp_path: Path, caplog) -> None:
    """Different settings hash differently: TNX's "Could not find a matching NEFF", a FileNotFoundError
    raised by ``to_neuron()`` after the weights are loaded (no manifest to catch it first), leads to a
    compilation, said in the log, instead of a failed load."""
    out = partition(tiny_llama, tmp_path / "out", "max_rolling_batch_size=2", "n_positions=64")
    (out / "compiled" / "djl_manifest.json").unlink()
    tnx.CALLS.clear()
    with caplog.at_level("WARNING"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=128, compiled_graph_path=out / "compiled")
    assert order(tnx) == [("from_pretrained",), ("load",), ("to_neuron", "weights loaded, no matching NEFF"),
                          ("from_pretrained",), ("to_neuron", "compile")]
    assert "compiling with the configured arguments instead" in caplog.text


def run_failing(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert partition_main(list(argv)) == 1
    return capsys.readouterr().err


def test_gptj_cannot_be_partitioned(tiny_model_factory, tnx, tmp_path: Path, capsys) -> None:
    err = run_failing(capsys, "--model-id", str(tiny_model_factory("gptj")), "--save-mp-checkpoint-path",
                      str(tmp_path / "out"), "--option", "n_positions=64")
    assert "cannot save compiled gptj graphs" in err and tnx.events("to_neuron") == []


def test_partition_never_overwrites_a_folder(tiny_llama: Path, tnx, tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    err = run_failing(capsys, "--model-id", str(tiny_llama), "--save-mp-checkpoint-path", str(tmp_path / "out"))
    assert "is not empty" in err and (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert tnx.events("from_pretrained") == []


def test_partition_reads_the_output_from_serving_properties(tiny_model_factory, tnx, tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_factory("llama"), model_dir)
    (model_dir / "serving.properties").write_text(
        f"option.save_mp_checkpoint_path={tmp_path / 'out'}\noption.n_positions=64\noption.max_rolling_batch_size=2\n")
    assert partition_main(["--model-dir", str(model_dir)]) == 0
    block = json.loads((tmp_path / "out" / "config.json").read_text())["neuron"]
    assert block["sequence_length"] == 64 and block["batch_size"] == 2


def test_upload_to_s3(tiny_llama: Path, tnx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="models")
        argv = ["--model-id", str(tiny_llama), "--save-mp-checkpoint-path", str(tmp_path / "out"),
                "--upload-s3", "s3://models/llama-neuron", "--option", "n_positions=64"]
        assert partition_main(argv) == 0
        keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="models")["Contents"]}
    local = {f"llama-neuron/{p.relative_to(tmp_path / 'out').as_posix()}" for p in (tmp_path / "out").rglob("*")
             if p.is_file()}
    assert keys == local and "llama-neuron/config.json" in keys


def test_partition_keeps_the_source_weights_without_reloading_them(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    """checkpoint/ holds the source's weight files byte for byte (hard-linked here: same file system), not a
    second copy of the model loaded into host memory and saved again."""
    import os

    out = partition(tiny_llama, tmp_path / "out", "device=neuron", "max_rolling_batch_size=2", "n_positions=64")
    weights = sorted(p.name for p in tiny_llama.glob("*.safetensors"))
    assert weights and sorted(p.name for p in (out / "checkpoint").glob("*.safetensors")) == weights
    assert all(os.path.samefile(tiny_llama / name, out / "checkpoint" / name) for name in weights)
    assert json.loads((out / "checkpoint" / "config.json").read_text()) == json.loads(
        (tiny_llama / "config.json").read_text())


@pytest.fixture
def sharded(tiny_llama: Path, tmp_path: Path) -> Path:
    import shutil

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), **dtype_kwargs(torch.float32))
    out = tmp_path / "sharded"
    model.save_pretrained(str(out), max_shard_size="20KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_llama / name).is_file():
            shutil.copy2(tiny_llama / name, out / name)
    return out


@pytest.mark.parametrize("tnx", ["0.9"], indirect=True)
def test_partition_refuses_a_sharded_checkpoint_before_compiling_on_0_9(sharded: Path, tnx, tmp_path: Path,
                                                                         capsys) -> None:
    argv = ["--model-id", str(sharded), "--save-mp-checkpoint-path", str(tmp_path / "out"),
            "--option", "device=neuron", "--option", "max_rolling_batch_size=2", "--option", "n_positions=64"]
    assert partition_main(argv) != 0
    assert "sharded checkpoint" in capsys.readouterr().err and not tnx.events("from_pretrained")


def test_a_sharded_checkpoint_stays_sharded_and_reloads(sharded: Path, tnx, tmp_path: Path) -> None:
    out = partition(sharded, tmp_path / "out", "device=neuron", "max_rolling_batch_size=2", "n_positions=64")
    assert (out / "checkpoint" / "model.safetensors.index.json").is_file()
    tnx.CALLS.clear()
    load_neuron(out, max_rolling_batch_size=2, n_positions=64)
    assert tnx.events("to_neuron")[-1][2] == "loaded"
