"""Which models the native forward takes (native/architectures.py), that everything else falls
back to the Hugging Face forward with the reason recorded, and the weight mappings it rests on."""

from __future__ import annotations

import pytest
import torch
from transformers import (BloomConfig, FalconConfig, GPT2Config, Qwen2Config, GPTBigCodeConfig, GPTJConfig, GPTNeoXConfig, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, OPTConfig)

from djl_python.backends.pytorch.native.architectures import native_support
from djl_python.backends.pytorch.native.architectures import rope_order
from djl_python.backends.pytorch.backend import PyTorchBackend


def test_supported_architectures_and_the_configs_refused() -> None:
    for config in (LlamaConfig(), MistralConfig(), GPT2Config(), GPTBigCodeConfig(), GPTJConfig(), GPTNeoXConfig(),
                   OPTConfig(), GPTBigCodeConfig(multi_query=False), GPTNeoXConfig(use_parallel_residual=False),
                   BloomConfig(), Qwen2Config()):
        assert native_support(config) is None, config.model_type
    assert "model_type 'falcon'" in native_support(FalconConfig())
    sliding = Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=1, num_hidden_layers=2)
    assert "sliding-window layers" in native_support(sliding)
    assert "post_layernorm" in native_support(BloomConfig(apply_residual_connection_post_layernorm=True))
    assert "slow_but_exact" in native_support(BloomConfig(pretraining_tp=2, slow_but_exact=True))
    assert "hidden_act 'gelu'" in native_support(LlamaConfig(hidden_act="gelu"))
    assert "activation 'quick_gelu'" in native_support(GPT2Config(activation_function="quick_gelu"))
    # A rope whose tables depend on the sequence length cannot be precomputed once.
    dynamic = LlamaConfig(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    assert "rope_type 'dynamic'" in native_support(dynamic)
    neox_dynamic = GPTNeoXConfig(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0,
                                                  "partial_rotary_factor": 0.25})
    assert "rope_type 'dynamic'" in native_support(neox_dynamic)
    assert "scale per layer" in native_support(GPT2Config(scale_attn_by_inverse_layer_idx=True))
    assert "do_layer_norm_before=False" in native_support(OPTConfig(do_layer_norm_before=False))
    assert "word_embed_proj_dim" in native_support(OPTConfig(hidden_size=1024, word_embed_proj_dim=512))
    assert "add_cross_attention" in native_support(GPT2Config(add_cross_attention=True))
    assert "rotary_dim 512" in native_support(GPTJConfig(rotary_dim=512))  # wider than a head of 256
    assert "rotary_dim 7" in native_support(GPTJConfig(rotary_dim=7))
    assert "head_dim 15 is odd" in native_support(GPTNeoXConfig(hidden_size=60, num_attention_heads=4))


@pytest.mark.parametrize("cpu_kernels", [True, False], ids=["kernels", "torch"])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_bigcode"])
def test_attention_without_scaling_is_served_as_the_model_computes_it(tmp_path, arch: str, cpu_kernels: bool) -> None:
    """``scale_attn_weights=False`` (scores unscaled): the native forward's attention takes the
    model's scale on both paths, the kernels' and SDPA's (whose default is 1/sqrt(head_dim))."""
    from transformers import AutoModelForCausalLM

    from tests.models import tiny_config

    config = tiny_config(arch)
    config.scale_attn_weights = False
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path))
    native = PyTorchBackend.load(tmp_path, max_slots=2, cpu_kernels=cpu_kernels)
    hf = PyTorchBackend.load(tmp_path, max_slots=2, native=False)
    assert native.info.extra["forward"] == "native"
    prompts = [[5, 9, 13, 17, 21, 30, 44], [7, 11]]
    torch.testing.assert_close(native.prefill([0, 1], prompts), hf.prefill([0, 1], prompts), atol=1e-4, rtol=1e-4)
    step = ([0, 1], [3, 4], [7, 2])
    torch.testing.assert_close(native.decode(*step), hf.decode(*step), atol=1e-4, rtol=1e-4)


def test_the_rope_order_moves_each_rotary_pair_to_a_head_half_and_keeps_every_dimension() -> None:
    assert rope_order(8, 8, interleaved=False) == list(range(8))  # a whole head by rotate_half: as it is
    # NeoX, 4 of 8 rotated: pairs (0, 2) and (1, 3) go to (0, 4) and (1, 5); 4..7 pass through.
    assert rope_order(8, 4, interleaved=False) == [0, 1, 4, 5, 2, 3, 6, 7]
    # GPT-J, 4 of 8 rotated: pairs (0, 1) and (2, 3) go to (0, 4) and (1, 5).
    assert rope_order(8, 4, interleaved=True) == [0, 2, 4, 5, 1, 3, 6, 7]
    # No rope (learned positions): the identity, whose tables are cos 1 and sin 0.
    assert rope_order(8, 0, interleaved=False) == list(range(8))
    for d, r in ((16, 4), (64, 16), (64, 64), (80, 32)):
        for interleaved in (False, True):
            assert sorted(rope_order(d, r, interleaved)) == list(range(d))


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
    assert "partial_rotary_factor 0.5" in native_support(_partial_rotary_config())
    # Refused whatever the rope type: which rope functions honour the factor differs between
    # transformers releases, and the Hugging Face forward is correct either way.
    default_type = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                "partial_rotary_factor": 0.5})
    assert "partial_rotary_factor 0.5" in native_support(default_type)
    attribute_form = LlamaConfig()
    attribute_form.partial_rotary_factor = 0.25  # transformers 4.x keeps it on the config
    assert "partial_rotary_factor 0.25" in native_support(attribute_form)
    whole = LlamaConfig()
    whole.partial_rotary_factor = 1.0
    assert native_support(whole) is None


def test_native_llama_refuses_rotary_tables_narrower_than_a_head() -> None:
    """Built directly (past native_support), the forward checks the tables it got."""
    from djl_python.backends.pytorch.native.decoder import NativeDecoder
    from djl_python.backends.pytorch.native import architectures

    model = LlamaForCausalLM(_partial_rotary_config()).eval()
    with torch.inference_mode(), pytest.raises(ValueError, match="rotary tables are 8 wide, a head 16"):
        architectures._READERS["llama"](model, 16)
    with torch.inference_mode(), pytest.raises(ValueError, match="partial_rotary_factor 0.5"):
        NativeDecoder(model, max_rows=2, n_positions=16)


def test_a_partial_rotary_llama_never_serves_silently(tmp_path) -> None:
    """The backend hands it to the Hugging Face forward, whose llama rotates whole heads too and
    refuses the narrower tables at load: an error, not a served model with wrong logits."""
    LlamaForCausalLM(_partial_rotary_config()).save_pretrained(str(tmp_path))
    with pytest.raises(RuntimeError, match="size of tensor"):
        PyTorchBackend.load(tmp_path, max_slots=2)
