"""The native forward's matmul kernels (``backends/pytorch/native/linear.py``): every kernel agrees with
``F.linear`` at every row count, and a packed backend holds one copy of its weights.

``PANELS`` is the CPU kernels' matmul where this CPU has it (fp32 wherever the kernels build,
bf16 with AVX512-BF16); the backend then packs for it, and ``oneDNN`` is forced by refusing the
panels."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from djl_python.backends.pytorch.native import cpu_kernels, panel_linear
from djl_python.backends.pytorch.native import linear as native_linear
from djl_python.backends.pytorch.native.linear import FEW_ROWS, linear, onednn_packs, packed_dtype, prepack
from djl_python.backends.pytorch.native.panel_linear import PanelWeight
from djl_python.backends.pytorch.backend import PyTorchBackend

PACKS_FP32 = onednn_packs(torch.float32)
KERNELS = cpu_kernels.load()[0]
PANELS = {} if KERNELS is None else KERNELS.gemm_panel


def _refuse_panels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(panel_linear, "refusal", lambda kernels, weight: "refused by the test")


@pytest.mark.parametrize("rows", [1, 8, FEW_ROWS, FEW_ROWS + 1, 300])
@pytest.mark.parametrize("packed", [False, True, "panels"])
@pytest.mark.parametrize("bias", [False, True])
def test_kernels_agree_with_f_linear(rows: int, packed: bool | str, bias: bool) -> None:
    if packed and not PACKS_FP32:
        pytest.skip("this torch's oneDNN does not pack fp32 weights here")
    if packed == "panels" and torch.float32 not in PANELS:
        pytest.skip("no fp32 panel matmul: the CPU kernels did not build here")
    torch.manual_seed(rows)
    weight, x = torch.randn(96, 64), torch.randn(rows, 64)
    b = torch.randn(96) if bias else None
    w = prepack(weight, KERNELS if packed == "panels" else None) if packed else weight
    assert isinstance(w, PanelWeight) == (packed == "panels")
    assert isinstance(w, PanelWeight) or w.is_mkldnn == packed
    torch.testing.assert_close(linear(x, w, b), F.linear(x, weight, b), atol=1e-4, rtol=1e-5)
    # Three dimensions (a packed prefill's [tokens, hidden] is 2-D; callers may still pass 3-D).
    x3 = x.view(1, rows, 64)
    torch.testing.assert_close(linear(x3, w, b), F.linear(x3, weight, b), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bias", [False, True])
def test_half_weights_pack_natively_or_widened(dtype: torch.dtype, bias: bool) -> None:
    """bf16/fp16 pack as themselves where oneDNN takes them (bf16: where the CPU also has bf16
    arithmetic), else widened to fp32 (AVX2 CPUs; bf16 on AVX-512 CPUs without AVX512-BF16), else
    not at all. Widened, a call is an fp32 GEMM on the half inputs rounded once: the half GEMM's
    arithmetic with fp32 accumulation."""
    torch.manual_seed(7)
    weight, x = torch.randn(96, 64).to(dtype), torch.randn(24, 64).to(dtype)
    b = torch.randn(96).to(dtype) if bias else None
    packed = prepack(weight)
    native = onednn_packs(dtype) and (dtype != torch.bfloat16 or native_linear.bf16_arithmetic())
    want_dtype = dtype if native else (torch.float32 if PACKS_FP32 else None)
    assert packed_dtype("cpu", dtype) == want_dtype
    assert packed.is_mkldnn == (want_dtype is not None)
    got = linear(x, packed, b)
    assert got.dtype == dtype
    exact = F.linear(x.float(), weight.float(), None if b is None else b.float()).to(dtype)
    # Widened or native, the sum is fp32; its order may differ: one half-precision rounding step at most.
    torch.testing.assert_close(got, exact, atol=0.05, rtol=1e-2)
    if want_dtype == torch.float32:
        assert (got != exact).float().mean() < 0.02  # almost every element the exact rounding


def test_bf16_is_widened_where_the_cpu_has_no_bf16_arithmetic(monkeypatch) -> None:
    """oneDNN takes bf16 on any AVX-512 CPU, but without AVX512-BF16 or AMX it emulates the
    products: there the weights are widened to fp32 instead (docs/performance.md measures both)."""
    from djl_python.backends.model_defaults import cpu_bf16_flags

    assert native_linear.bf16_arithmetic() == bool(cpu_bf16_flags())
    if not (onednn_packs(torch.bfloat16) and PACKS_FP32):
        pytest.skip("this CPU's oneDNN does not take bf16 weights: they are widened whatever its arithmetic")
    monkeypatch.setattr(native_linear, "bf16_arithmetic", lambda: False)
    assert packed_dtype("cpu", torch.bfloat16) == torch.float32
    assert prepack(torch.randn(96, 64).bfloat16()).dtype == torch.float32
    monkeypatch.setattr(native_linear, "bf16_arithmetic", lambda: True)
    assert packed_dtype("cpu", torch.bfloat16) == torch.bfloat16


@pytest.mark.skipif(not PACKS_FP32, reason="this torch's oneDNN does not pack fp32 weights here")
@pytest.mark.parametrize("matmul", ["panels", "onednn"])
def test_packed_backend_releases_the_module_linears(matmul, tiny_model_factory, monkeypatch, caplog) -> None:
    if matmul == "panels" and torch.float32 not in PANELS:
        pytest.skip("no fp32 panel matmul: the CPU kernels did not build here")
    if matmul == "onednn":
        _refuse_panels(monkeypatch)
    with caplog.at_level(logging.INFO, logger="djl_python.backends.pytorch.backend"):
        backend = PyTorchBackend.load(tiny_model_factory("llama"), max_slots=2)
    assert backend.info.extra["weights_layout"] == {"panels": "panels", "onednn": "onednn-packed"}[matmul]
    # The load log line and the info say which matmul runs, and at which vector width: this CPU's.
    host_bits = 512 if "avx512f" in cpu_kernels.cpu_flags() else 256
    if matmul == "panels":
        assert backend.info.extra["panel_matmul_bits"] == host_bits
        assert f"weights: panels ({host_bits}-bit matmul);" in caplog.text
    else:
        assert "panel_matmul_bits" not in backend.info.extra
        assert "weights: onednn-packed;" in caplog.text
    decoder = backend.model.model.layers[0]
    released = [decoder.self_attn.q_proj, decoder.self_attn.o_proj, decoder.mlp.gate_proj, decoder.mlp.down_proj]
    assert all(lin.weight.numel() == 0 for lin in released)
    # The embedding (the LM head when tied) and the norms stay with the module.
    assert backend.model.model.embed_tokens.weight.numel() > 0
    assert decoder.input_layernorm.weight.numel() > 0


@pytest.mark.parametrize("matmul", ["panels", "onednn"])
def test_biases_and_a_tied_head_give_the_hf_logits(matmul, tmp_path, monkeypatch) -> None:
    """Attention and MLP biases, a tied LM head: the native forward (packed for the panel matmul
    or for oneDNN where they run) against the Hugging Face forward on the same folder, prefill
    of mixed lengths and a decode."""
    from transformers import AutoModelForCausalLM

    from tests.models import tiny_config

    config = tiny_config("llama")
    config.tie_word_embeddings, config.attention_bias, config.mlp_bias = True, True, True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)  # zero-initialised: make them count
    model.save_pretrained(str(tmp_path))
    if matmul == "onednn":
        _refuse_panels(monkeypatch)
    native = PyTorchBackend.load(tmp_path, max_slots=3)
    if matmul == "panels" and native.info.extra["weights_layout"] != "panels":
        pytest.skip(f"the backend packs {native.info.extra['weights_layout']} here (no fp32 panel matmul)")
    hf = PyTorchBackend.load(tmp_path, max_slots=3, native=False)
    assert native.info.extra["forward"] == "native" and hf.info.extra["forward"] == "hf"
    prompts = [[5, 9, 13, 17, 21, 25, 29], [7, 11], [4, 8, 12]]
    torch.testing.assert_close(native.prefill([0, 1, 2], prompts), hf.prefill([0, 1, 2], prompts),
                               atol=1e-4, rtol=1e-4)
    step = ([0, 1, 2], [3, 4, 6], [7, 2, 3])  # each row appends at its prompt length
    torch.testing.assert_close(native.decode(*step), hf.decode(*step), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["widened", "onednn-bf16", "panels", "plain"])
def test_every_bf16_layout_is_a_gemm_accumulated_in_fp32_and_rounded_once(layout: str, monkeypatch) -> None:
    """The arithmetic the bf16 margin rule (test_native_bf16) assumes, per weight layout: each
    output within one bf16 ulp of the exact product of the bf16 inputs (plus the fp32 sum's own
    error). A GEMM accumulating in bf16 would miss by many ulps at this depth (k = 320)."""
    real = onednn_packs
    if layout == "widened":
        if not real(torch.float32):
            pytest.skip("this torch's oneDNN does not pack fp32 weights here")
        monkeypatch.setattr(native_linear, "onednn_packs", lambda dtype: dtype != torch.bfloat16 and real(dtype))
    elif layout == "onednn-bf16":
        if not real(torch.bfloat16):
            pytest.skip("oneDNN cannot run bf16 on this CPU; the widened and plain layouts hold the same contract")
        monkeypatch.setattr(native_linear, "bf16_arithmetic", lambda: True)  # where it emulates bf16 too
    elif layout == "panels" and torch.bfloat16 not in PANELS:
        pytest.skip("no bf16 panel matmul on this CPU (AVX512-BF16)")
    torch.manual_seed(8)
    weight, x = torch.randn(96, 320).bfloat16(), torch.randn(40, 320).bfloat16()
    w = weight if layout == "plain" else prepack(weight, KERNELS if layout == "panels" else None)
    assert isinstance(w, PanelWeight) == (layout == "panels")
    assert isinstance(w, PanelWeight) or w.is_mkldnn == (layout != "plain")
    assert w.dtype == {"widened": torch.float32, "onednn-bf16": torch.bfloat16, "panels": torch.bfloat16,
                       "plain": torch.bfloat16}[layout]
    for rows in (1, 8, 40):  # the weight-first decode product and the plain GEMM on an unpacked weight
        got = linear(x[:rows], w, None)
        assert got.dtype == torch.bfloat16
        exact = x[:rows].double() @ weight.double().T
        ulp = torch.exp2(torch.floor(torch.log2(exact.abs())) - 7)
        fp32_sum = 320 * 2.0 ** -24 * (x[:rows].double().abs() @ weight.double().abs().T)
        assert ((got.double() - exact).abs() <= ulp + fp32_sum).all()


def test_a_weight_the_panels_refuse_keeps_onednn(tmp_path, monkeypatch) -> None:
    """bf16 with an odd MLP width: the down projection's input width is odd, which the bf16 panels
    cannot take (pairs), so that weight alone is packed for oneDNN; the logits agree with a
    backend packed wholly for oneDNN, within bf16 rounding."""
    if torch.bfloat16 not in PANELS or not onednn_packs(torch.bfloat16):
        pytest.skip("needs the bf16 panel matmul (AVX512-BF16) and oneDNN bf16 on this CPU")
    from transformers import AutoModelForCausalLM

    from tests.models import tiny_config

    config = tiny_config("llama")
    config.intermediate_size = 37
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path))
    mixed = PyTorchBackend.load(tmp_path, max_slots=2, dtype="bf16")
    assert mixed.info.extra["weights_layout"] == "panels and onednn-packed"
    assert isinstance(mixed._forward.layers[0].qkv, PanelWeight) and mixed._forward.layers[0].down.is_mkldnn
    _refuse_panels(monkeypatch)
    onednn = PyTorchBackend.load(tmp_path, max_slots=2, dtype="bf16")
    assert onednn.info.extra["weights_layout"] == "onednn-packed"
    prompts = [[5, 9, 13, 17, 21], [7, 11, 4]]
    got, want = mixed.prefill([0, 1], prompts), onednn.prefill([0, 1], prompts)
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)
