"""Which models the native llama forward takes, and that everything else falls back to the
Hugging Face forward with the reason recorded."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM, MistralConfig

from djl_python.backends.pytorch.native.llama import llama_support
from djl_python.backends.pytorch.backend import PyTorchBackend


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


def _partial_rotary_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                       rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.5})


def test_a_partial_rotary_is_refused_with_the_reason() -> None:
    """Its cos/sin tables are narrower than a head: the kernels would read the tables past
    their end (a heap over-read under AddressSanitizer) and return finite logits."""
    assert "partial_rotary_factor 0.5" in llama_support(_partial_rotary_config())
    # Refused whatever the rope type: which rope functions honour the factor differs between
    # transformers releases, and the Hugging Face forward is correct either way.
    default_type = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                "partial_rotary_factor": 0.5})
    assert "partial_rotary_factor 0.5" in llama_support(default_type)
    attribute_form = LlamaConfig()
    attribute_form.partial_rotary_factor = 0.25  # transformers 4.x keeps it on the config
    assert "partial_rotary_factor 0.25" in llama_support(attribute_form)
    whole = LlamaConfig()
    whole.partial_rotary_factor = 1.0
    assert llama_support(whole) is None


def test_native_llama_refuses_rotary_tables_narrower_than_a_head() -> None:
    """Built directly (past llama_support), the forward checks the tables it got."""
    from djl_python.backends.pytorch.native.llama import NativeLlama
    from djl_python.backends.pytorch.native.cpu_kernels import load

    model = LlamaForCausalLM(_partial_rotary_config()).eval()
    with torch.inference_mode(), pytest.raises(ValueError, match="rotary tables are 8 wide, a head 16"):
        NativeLlama(model, max_rows=2, n_positions=16, kernels=load()[0])


def test_a_partial_rotary_llama_never_serves_silently(tmp_path) -> None:
    """The backend hands it to the Hugging Face forward, whose llama rotates whole heads too and
    refuses the narrower tables at load: an error, not a served model with wrong logits."""
    LlamaForCausalLM(_partial_rotary_config()).save_pretrained(str(tmp_path))
    with pytest.raises(RuntimeError, match="size of tensor"):
        PyTorchBackend.load(tmp_path, max_slots=2)
