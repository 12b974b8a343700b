"""LMI >= 0.30's Neuron options, per transformers-neuronx release, and the environment graphs compile in.

LMI's transformers-neuronx loader passes ``fuse_qkv``, ``fuse_mlp``, ``fused_rmsnorm_qkv``,
``qkv_tiling``, ``weight_tiling``, ``shard_over_sequence`` and ``on_device_embedding`` to
``NeuronConfig`` only when true (djl-serving afece25d ``neuron_utils/model_loader.py:194-220``), so
the same serving.properties give the same graphs here. A key the installed release does not know is
refused by name with the release that added it (the double's ``NeuronConfig`` asserts on unknown keys
from 0.10, as c8d6bdc/1ade6d7 ``config.py`` do). ``compilation_worker_count`` sizes the compile pool on
0.13 (1ade6d7 ``base.py:88``) and warns elsewhere. Options only LMI's vLLM loader reads warn
(tests/config/test_option_honesty.py).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from pathlib import Path

import pytest

from djl_python.backends.neuron import loader
from djl_python.backends.neuron.versions import NeuronVersionError
from djl_python.config import ConfigError
from tests.neuron.conftest import load_neuron, make_config

GRAPH_OPTIONS = {"fuse_qkv": "true", "fuse_mlp": "true", "qkv_tiling": "true", "weight_tiling": "true",
                 "shard_over_sequence": "true"}


def recorded_neuron_config(tnx) -> dict:
    (call,) = tnx.events("from_pretrained")
    return call[3]["neuron_config"].recorded


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_graph_options_reach_neuron_config_when_true(tiny_llama: Path, tnx) -> None:
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, **GRAPH_OPTIONS)
    recorded = recorded_neuron_config(tnx)
    assert {k: recorded.get(k) for k in GRAPH_OPTIONS} == dict.fromkeys(GRAPH_OPTIONS, True)


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_false_leaves_the_default_as_lmi_does(tiny_llama: Path, tnx) -> None:
    """An explicit false is not passed (LMI's ``if self.config.X``): the graphs are TNX's default ones."""
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, fuse_mlp="false", weight_tiling="false")
    recorded = recorded_neuron_config(tnx)
    assert "fuse_mlp" not in recorded and "weight_tiling" not in recorded


@pytest.mark.parametrize(("tnx", "option", "since"), [("0.11", "fuse_mlp", "0.12"), ("0.10-late", "qkv_tiling", "0.11"),
                                                       ("0.10-early", "shard_over_sequence", "0.11")],
                         indirect=["tnx"])
def test_an_option_newer_than_the_release_is_refused_by_name(tiny_llama: Path, tnx, option: str, since: str) -> None:
    extra = {"fuse_qkv": "true"} if option == "qkv_tiling" else {}
    with pytest.raises(NeuronVersionError, match=rf"option\.{option} \(NeuronConfig\.{option}, from "
                                                 rf"transformers-neuronx {since}\)"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, **{option: "true"}, **extra)
    assert not tnx.events("to_neuron")


def test_qkv_tiling_needs_fuse_qkv(tiny_llama: Path) -> None:
    """transformers-neuronx asserts it (c8d6bdc config.py:204-208); refused with both keys named."""
    with pytest.raises(ConfigError, match=r"option\.qkv_tiling=true needs option\.fuse_qkv=true"):
        make_config(tiny_llama, qkv_tiling="true")


def test_flash_decoding_needs_the_sbh_cache(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match=r"option\.shard_over_sequence.*option\.cache_layout=BSH"):
        make_config(tiny_llama, shard_over_sequence="true", cache_layout="BSH")


@pytest.mark.parametrize("tnx", ["0.13"], indirect=True)
def test_compilation_worker_count_sizes_the_compile_pool(tiny_llama: Path, tnx) -> None:
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, compilation_worker_count=3)
    ((_, _, workers, _, _),) = tnx.events("compile")
    assert workers == 3 and recorded_neuron_config(tnx)["compilation_worker_count"] == 3


@pytest.mark.parametrize("tnx", ["0.11"], indirect=True)
def test_compilation_worker_count_warns_before_0_13(tiny_llama: Path, tnx, caplog) -> None:
    with caplog.at_level("WARNING"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, compilation_worker_count=3)
    assert "option.compilation_worker_count has no effect on transformers-neuronx 0.11" in caplog.text
    assert "compilation_worker_count" not in recorded_neuron_config(tnx)


def test_the_worker_count_does_not_change_the_saved_graphs(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    """Graphs compiled with one worker count load with another: the count is not in the manifest."""
    from djl_python.partition import main

    out = tmp_path / "out"
    assert main(["--model-id", str(tiny_llama), "--save-mp-checkpoint-path", str(out), "--option", "device=neuron",
                 "--option", "max_rolling_batch_size=2", "--option", "n_positions=64",
                 "--option", "compilation_worker_count=1"]) == 0
    tnx.CALLS.clear()
    load_neuron(out, max_rolling_batch_size=2, n_positions=64, compilation_worker_count=4)
    assert tnx.events("to_neuron")[-1][2] == "loaded" and not tnx.events("compile")


def test_an_lmi_0_28_embedding_file_turns_on_device_embedding_on(tiny_llama: Path, tnx, tmp_path: Path,
                                                                caplog) -> None:
    """LMI 0.28-0.29 passed the file's object as NeuronConfig.on_device_embedding (djl-serving v0.28.0
    neuron_utils/model_loader.py:189-192): any non-empty file turns it on; its keys do nothing else."""
    path = tmp_path / "embedding.json"
    path.write_text(json.dumps({"max_length": 128, "top_k": 50}))
    with caplog.at_level("WARNING"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, on_device_embedding_config=path)
    assert recorded_neuron_config(tnx)["on_device_embedding"] is True
    assert "['max_length', 'top_k'] have no effect" in caplog.text


def test_the_two_embedding_keys_must_agree(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    path = tmp_path / "embedding.json"
    path.write_text(json.dumps({"on_device_embedding": True}))
    with pytest.raises(ConfigError, match="option.on_device_embedding=false contradicts"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, on_device_embedding="false",
                    on_device_embedding_config=path)


def test_on_device_generation_is_refused_unless_empty(tiny_llama: Path, tnx, tmp_path: Path) -> None:
    empty, settings = tmp_path / "empty.json", tmp_path / "generation.json"
    empty.write_text("{}")
    settings.write_text(json.dumps({"top_k": 5}))
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, on_device_generation=empty)
    with pytest.raises(ConfigError, match="option.on_device_generation.*samples on the host"):
        load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64, on_device_generation=settings)


def test_graphs_compile_under_forkserver_in_a_writable_directory(tiny_llama: Path, tnx, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers-neuronx compiles in a ProcessPoolExecutor with the default start method; the loader
    runs in a thread, so fork could deadlock (the double refuses it). SageMaker's working directory is
    read-only; DJL compiles in /tmp (afece25d model_loader.py:385). Both are restored afterwards."""
    read_only = tmp_path / "opt-ml-model"
    read_only.mkdir()
    monkeypatch.chdir(read_only)
    monkeypatch.setattr(loader, "writable", lambda path: Path(path) != read_only)
    before = multiprocessing.get_start_method(allow_none=True)
    load_neuron(tiny_llama, max_rolling_batch_size=2, n_positions=64)
    ((_, _, _, method, cwd),) = tnx.events("compile")
    assert method == "forkserver" and cwd == os.path.realpath(tempfile.gettempdir())
    assert Path.cwd() == read_only and multiprocessing.get_start_method(allow_none=True) == before


PROBE = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from djl_python.backends.neuron.loader import compile_environment

def seen():
    return os.environ.get("NEURON_CC_FLAGS"), os.getcwd()

if __name__ == "__main__":
    for flags in ("--first", "--second"):
        os.environ["NEURON_CC_FLAGS"] = flags
        with compile_environment():  # what transformers-neuronx's compile() does inside it
            with ProcessPoolExecutor(2) as pool:
                print(*pool.submit(seen).result(), multiprocessing.get_start_method(), flush=True)
    print(multiprocessing.get_start_method(allow_none=True))
"""


def test_compile_workers_are_real_processes_with_the_current_environment(tmp_path: Path) -> None:
    """The compile environment with real worker processes (the double starts none): workers start, see the
    environment of their own compile (the fork server is stopped after each), and the start method is
    restored."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")
    assert lines[0] == f"--first {tmp_path} forkserver" and lines[1] == f"--second {tmp_path} forkserver"
    assert lines[2] == "None"
