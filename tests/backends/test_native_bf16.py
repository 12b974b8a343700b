"""bf16 on the native forward, judged by the margin rule (:mod:`tests.backends.bf16_margin`).

Every bf16 weight layout the backend can take is run on every machine where the CPU allows
it, each judged token by token against the fp32 reference:

* ``widened``: weights packed as fp32 for oneDNN, a call rounds its output to bf16 once
  (the default on CPUs without bf16 instructions; forced here on CPUs with them);
* ``onednn-bf16``: weights packed as bf16 (the default on CPUs whose oneDNN runs bf16:
  AVX-512 BW/VL/DQ or AVX-NE-CONVERT); where it cannot run, its arithmetic (a bf16 GEMM
  accumulated in fp32, rounded once) is tested directly in ``test_native_linear``;
* ``plain-bf16``: unpacked bf16 weights on torch's bf16 matmuls (the layout off x86 and
  on CUDA), on every machine.

A token is excused only where bf16 rounding explains it; exact equality is promised in fp32
(``test_pytorch_backend``). A planted defect shows the rule can fail.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from djl_python.backends.pytorch.native import cpu_kernels, panel_linear
from djl_python.backends.pytorch.native import linear as native_linear
from djl_python.backends.pytorch.native import decoder as native_decoder
from djl_python.backends.pytorch.backend import PyTorchBackend
from tests.backends.bf16_margin import Fp32Reference, unexcused
from tests.backends.slot_driver import Job, run_greedy

# Plain text prompts (no chat template). "Twelve times twelve equals" holds a near tie between
# its first two candidates in fp32 (docs/testing.md), so bf16 implementations differ there.
PROMPTS = (
    "The capital of France is",
    "Three primary colors are",
    "A spider has eight",
    "Twelve times twelve equals",
)
NEW_TOKENS = 12
LAYOUTS = {"widened": "onednn-packed, widened to fp32", "onednn-bf16": "onednn-packed", "panels-bf16": "panels",
           "plain-bf16": "plain"}


@pytest.fixture(scope="module")
def reference(smollm2_dir) -> Fp32Reference:
    return Fp32Reference(smollm2_dir)


@pytest.fixture(scope="module")
def prompts(smollm2_dir) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    return [tokenizer.encode(p) for p in PROMPTS]


def _force_layout(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the backend take ``layout`` for bf16 weights, or skip where this CPU cannot."""
    real = native_linear.onednn_packs
    if layout == "widened":
        if not real(torch.float32):
            pytest.skip("this torch's oneDNN does not pack fp32 weights here")
        monkeypatch.setattr(native_linear, "onednn_packs", lambda dtype: dtype != torch.bfloat16 and real(dtype))
    elif layout == "onednn-bf16":
        if not real(torch.bfloat16):
            pytest.skip("oneDNN cannot run bf16 on this CPU (no AVX-512 BW/VL/DQ or AVX-NE-CONVERT); "
                        "its arithmetic is tested in test_native_linear")
        monkeypatch.setattr(panel_linear, "refusal", lambda kernels, weight: "refused by the test")
        # Packed as bf16 even where the CPU has no bf16 arithmetic (oneDNN emulates it there; the
        # backend widens instead): the layout CPUs with AVX512-BF16 or AMX run, tested wherever it runs.
        monkeypatch.setattr(native_linear, "bf16_arithmetic", lambda: True)
    elif layout == "panels-bf16":
        kernels = cpu_kernels.load()[0]
        if kernels is None or torch.bfloat16 not in kernels.gemm_panel:
            pytest.skip("no bf16 panel matmul on this CPU (AVX512-BF16); its arithmetic is tested in "
                        "test_panel_linear")
    else:
        monkeypatch.setattr(native_decoder, "packs_on", lambda device_type, dtype: False)


def _greedy(backend: PyTorchBackend, prompts: list[list[int]]) -> list[list[int]]:
    jobs = [Job(p, i // 2, NEW_TOKENS) for i, p in enumerate(prompts)]  # two join later
    run_greedy(backend, jobs)
    return [job.tokens for job in jobs]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bf16_tokens_are_explained_by_rounding(layout, smollm2_dir, reference, prompts, monkeypatch) -> None:
    _force_layout(layout, monkeypatch)
    backend = PyTorchBackend.load(smollm2_dir, max_slots=4, n_positions=64, dtype="bf16")
    assert backend.info.dtype == "bf16" and backend.info.extra["forward"] == "native"
    assert backend.info.extra["weights_layout"] == LAYOUTS[layout]
    continuations = _greedy(backend, prompts)
    assert unexcused(reference, prompts, continuations) == []


def test_the_margin_rule_refuses_a_planted_defect(smollm2_dir, reference, prompts) -> None:
    """A bf16 backend whose attention scale is doubled (a plausible kernel-argument bug) picks
    tokens the rule cannot excuse. Planted in the Python layer loop's argument (the layer stack
    copies it at load, and computes what the loop computes: test_layer_stack)."""
    backend = PyTorchBackend.load(smollm2_dir, max_slots=4, n_positions=64, dtype="bf16", layer_stack=False)
    backend._forward.scale *= 2.0
    assert unexcused(reference, prompts, _greedy(backend, prompts))


def test_fp32_greedy_tokens_need_no_excuse(smollm2_dir, reference, prompts) -> None:
    """The rule's reference agrees with the backend's own fp32 forward: every token is its argmax."""
    backend = PyTorchBackend.load(smollm2_dir, max_slots=4, n_positions=64, dtype="fp32")
    continuations = _greedy(backend, prompts)
    assert all(reference.misses(p, c) == [] for p, c in zip(prompts, continuations))
