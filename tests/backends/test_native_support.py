"""Which models the native llama forward takes, and that everything else falls back to the
Hugging Face forward with the reason recorded."""

from __future__ import annotations

import torch
from transformers import GPT2Config, LlamaConfig, MistralConfig

from djl_python.backends.native import llama_support
from djl_python.backends.pytorch import PyTorchBackend


def test_llama_family_supported_others_refused() -> None:
    assert llama_support(LlamaConfig()) is None
    assert llama_support(MistralConfig()) is None
    assert "model_type 'gpt2'" in llama_support(GPT2Config())
    assert "hidden_act 'gelu'" in llama_support(LlamaConfig(hidden_act="gelu"))
    # A rope whose tables depend on the sequence length cannot be precomputed once.
    dynamic = LlamaConfig(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    assert "rope_type 'dynamic'" in llama_support(dynamic)


def test_native_false_runs_the_hf_forward_with_the_same_logits(tiny_model_factory) -> None:
    path = tiny_model_factory("llama")
    native = PyTorchBackend.load(path, max_slots=2)
    hf = PyTorchBackend.load(path, max_slots=2, native=False)
    assert native.info.extra["forward"] == "native"
    assert hf.info.extra["forward"] == "hf" and hf.info.extra["native_skipped"] == "native=False"
    prompts = [[5, 9, 13, 17, 21], [7, 11]]
    torch.testing.assert_close(native.prefill([0, 1], prompts), hf.prefill([0, 1], prompts), atol=1e-5, rtol=1e-5)
    step = ([0, 1], [3, 4], [5, 2])
    torch.testing.assert_close(native.decode(*step), hf.decode(*step), atol=1e-5, rtol=1e-5)
