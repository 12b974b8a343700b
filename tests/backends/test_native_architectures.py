"""Each architecture's mapping onto the native forward's one layer shape (native/architectures.py)
against the Hugging Face forward of the same weights: prefill and decode logits, on the CPU
kernels (with the layer stack where every weight is in panels) and on torch ops (the path CUDA
runs).

The models are made to tell mappings apart: ``from_config`` gives every norm weight 1 and every
bias 0, which would hide a norm's bias left out, two norms swapped or a bias on the wrong rows, so
here every norm weight is drawn from [0.5, 1.5] and every bias from N(0, 0.5). The MLP's
projections are scaled up so that its pre-activations reach a few units, where GELU's erf and tanh
forms differ by ~5e-4, and the difference reaches the logits (at the tiny models' scale they differ
by ~1e-7, below any tolerance): :func:`test_the_activation_forms_are_told_apart` checks that a
swapped form then fails the comparison.
Beside each architecture's default tiny config, the variants its mapping branches on: gpt_neox
with sequential residuals, gpt_bigcode with a K/V head per query head (a QKV stored per head),
bloom with three heads (ALiBi slopes from the extra-heads branch), qwen2's q/k/v biases.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.backends.pytorch.native.architectures import recipe
from tests.models import ARCHS, require_pytorch_backend, tiny_config

# name: (arch, config changes)
VARIANTS: dict[str, tuple[str, dict]] = {
    **{arch: (arch, {}) for arch in ARCHS},
    "gpt_neox-sequential": ("gpt_neox", {"use_parallel_residual": False}),
    "gpt_bigcode-per-head": ("gpt_bigcode", {"multi_query": False}),
    "bloom-3-heads": ("bloom", {"n_head": 3, "hidden_size": 48}),
}
# The MLP's projections per architecture (their weights are scaled up; see the module docstring).
_UP = ("gate_proj", "up_proj", "dense_h_to_4h", "fc_in", "c_fc", "fc1")
_DOWN = ("down_proj", "dense_4h_to_h", "fc_out", "mlp.c_proj", "fc2")
ATOL = RTOL = 2e-4


def _model(arch: str, changes: dict, seed: int = 0) -> torch.nn.Module:
    config = tiny_config(arch)
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.dim() == 1 and ("norm" in name or "ln_" in name):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
            elif any(f"{up}.weight" in name for up in _UP):
                p.mul_(15.0)
            elif any(f"{down}.weight" in name for down in _DOWN):
                p.mul_(10.0)  # so that the activation's form reaches the logits
        model.get_output_embeddings().weight.mul_(8.0)  # logits spread over several units, as make_tiny_model's
    return model


def _compare(folder: Path, cpu_kernels: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The largest |native - hf| of prefill logits and of one decode step's, and the native
    backend's info."""
    native = PyTorchBackend.load(folder, max_slots=3, cpu_kernels=cpu_kernels)
    hf = PyTorchBackend.load(folder, max_slots=3, native=False)
    prompts = [[5, 9, 13, 17, 21, 25, 29, 33, 40, 41, 42], [7, 11], [4, 8, 12, 16]]
    pre = (native.prefill([0, 1, 2], prompts), hf.prefill([0, 1, 2], prompts))
    step = ([0, 1, 2], [3, 4, 6], [11, 2, 4])  # each row appends at its prompt length
    dec = (native.decode(*step), hf.decode(*step))
    return pre, dec, native.info.extra


@pytest.mark.parametrize("cpu_kernels", [True, False], ids=["kernels", "torch"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_native_logits_equal_the_hugging_face_forwards(tmp_path: Path, variant: str, cpu_kernels: bool) -> None:
    require_pytorch_backend()
    arch, changes = VARIANTS[variant]
    _model(arch, changes).save_pretrained(str(tmp_path))
    (native_pre, hf_pre), (native_dec, hf_dec), info = _compare(tmp_path, cpu_kernels)
    assert info["forward"] == "native"
    if cpu_kernels:
        assert info["native_ops"] == "cpu-kernels"
    torch.testing.assert_close(native_pre, hf_pre, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(native_dec, hf_dec, atol=ATOL, rtol=RTOL)
    assert hf_pre.std() > 0.5  # logits spread: a discriminating comparison


def test_the_activation_forms_are_told_apart(tmp_path: Path, monkeypatch) -> None:
    """The scaled MLP makes the GELU form matter: gpt_neox's erf GELU computed as the tanh form
    moves the logits past the tolerance above (so a wrong ACTIVATIONS entry would fail there)."""
    require_pytorch_backend()
    from djl_python.backends.pytorch.native import architectures

    _model("gpt_neox", {}).save_pretrained(str(tmp_path))
    assert recipe(tiny_config("gpt_neox")).kernel_activation == "gelu_erf"
    (right, hf), _, _ = _compare(tmp_path, cpu_kernels=True)
    torch.testing.assert_close(right, hf, atol=ATOL, rtol=RTOL)
    monkeypatch.setitem(architectures.ACTIVATIONS, "gelu", "gelu_tanh")
    (wrong, _), _, _ = _compare(tmp_path, cpu_kernels=True)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(wrong, hf, atol=ATOL, rtol=RTOL)


def test_each_recipe_is_the_models_own() -> None:
    """The layer shape each config maps to (the comparisons above hold it numerically)."""
    from transformers import BloomConfig, GPT2Config, GPTJConfig, GPTNeoXConfig, LlamaConfig, OPTConfig

    assert recipe(LlamaConfig()).kernel_activation == "silu" and recipe(LlamaConfig()).norm == "rms"
    assert recipe(GPT2Config()).kernel_activation == "gelu_tanh"
    assert recipe(GPTNeoXConfig()).kernel_activation == "gelu_erf"
    assert recipe(OPTConfig()).kernel_activation == "relu"
    assert recipe(BloomConfig()).kernel_activation == "gelu_tanh"
    assert recipe(GPTNeoXConfig()).residual == "parallel"
    assert recipe(GPTNeoXConfig(use_parallel_residual=False)).residual == "sequential"
    assert recipe(GPTJConfig()).residual == "shared_norm"
    assert {recipe(c()).norm for c in (GPT2Config, GPTJConfig, GPTNeoXConfig, OPTConfig, BloomConfig)} == {"layer"}
