"""``device=auto``: Neuron (device node + transformers-neuronx), else CUDA, else CPU; and the dispatch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from djl_python.backends import dispatch as select
from djl_python.backends.neuron import devices
from tests.models import PYTORCH_BACKEND_REASON, pytorch_backend_available
from tests.neuron.conftest import make_config


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch):
    """Pretend hardware: ``host(neuron_devices=2, tnx=True, cuda=False)``."""

    def set_host(*, neuron_devices: int = 0, tnx: bool = False, cuda: bool = False) -> None:
        nodes = [f"/dev/neuron{i}" for i in range(neuron_devices)]
        monkeypatch.setattr(devices.glob, "glob", lambda pattern: list(nodes) if pattern == "/dev/neuron*" else [])
        monkeypatch.setattr(devices.importlib.util, "find_spec",
                            lambda name: object() if tnx and name == "transformers_neuronx" else None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.delenv("NEURON_RT_NUM_CORES", raising=False)

    return set_host


@pytest.mark.parametrize(
    ("neuron_devices", "tnx", "cuda", "expected"),
    [
        (1, True, True, "neuron"),
        (1, False, True, "cuda"),  # a device node alone is not enough
        (0, True, True, "cuda"),  # nor is the library alone
        (1, False, False, "cpu"),
        (0, False, False, "cpu"),
    ],
)
def test_auto(host, neuron_devices: int, tnx: bool, cuda: bool, expected: str,
              caplog: pytest.LogCaptureFixture) -> None:
    host(neuron_devices=neuron_devices, tnx=tnx, cuda=cuda)
    with caplog.at_level("INFO", logger=select.__name__):
        assert select.select_device("auto") == expected
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("device:")] == [
        next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"device: {expected} (auto"))]


def test_explicit_device_wins(host) -> None:
    host(neuron_devices=2, tnx=True, cuda=True)
    assert select.select_device("cpu") == "cpu"
    assert select.select_device("CUDA") == "cuda"
    with pytest.raises(ValueError, match="option.device='tpu'"):
        select.select_device("tpu")


def test_core_count(host, monkeypatch: pytest.MonkeyPatch) -> None:
    host(neuron_devices=6)  # inf2.24xlarge: 6 Inferentia2 chips, 12 cores
    assert devices.neuron_core_count() == 12
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "4")
    assert devices.neuron_core_count() == 4


def test_the_double_counts_as_installed(tnx) -> None:
    assert devices.tnx_importable()


def test_load_backend_dispatch_to_neuron(tiny_llama: Path, tnx) -> None:
    from djl_python.artifacts import resolve_artifacts
    from djl_python.backends.neuron.backend import NeuronBackend

    config = make_config(tiny_llama, device="neuron", max_rolling_batch_size=2, n_positions=64)
    backend = select.load_backend(config, resolve_artifacts(config))
    assert isinstance(backend, NeuronBackend) and backend.limits.max_slots == 2 and backend.limits.n_positions == 64


@pytest.mark.skipif(not pytorch_backend_available(), reason=PYTORCH_BACKEND_REASON)
def test_load_backend_dispatch_to_pytorch(tiny_llama: Path) -> None:
    from djl_python.artifacts import resolve_artifacts
    from djl_python.backends.pytorch.backend import PyTorchBackend

    config = make_config(tiny_llama, device="cpu", max_rolling_batch_size=2, n_positions=64)
    backend = select.load_backend(config, resolve_artifacts(config))
    assert isinstance(backend, PyTorchBackend) and backend.limits.max_slots == 2 and backend.limits.n_positions == 64


def test_load_engine_on_neuron_generates(tiny_llama: Path, tnx, host) -> None:
    """The whole path the front ends use: configuration -> device=auto -> Neuron backend -> engine."""
    from transformers import AutoModelForCausalLM

    from djl_python.engine import SamplingParams
    from djl_python.loader import load_engine
    from tests.models import dtype_kwargs

    host(neuron_devices=1, tnx=True)
    engine = load_engine(make_config(tiny_llama, device="auto", max_rolling_batch_size=2, n_positions=64))
    assert engine.limits.max_slots == 2 and tnx.events("to_neuron")
    result = engine.generate([[5, 6, 7]], SamplingParams(max_new_tokens=6))[0]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        expected = model.generate(torch.tensor([[5, 6, 7]]), do_sample=False, max_new_tokens=6)[0, 3:].tolist()
    assert result.token_ids == expected
