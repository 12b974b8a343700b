"""The PyTorch backend reproduces ``transformers``' own greedy generation, row by row.

Requests join at different steps, share prefill calls, occupy non-contiguous slots and
reuse released ones; each must still get exactly the tokens (and, closely, the logits)
that ``model.generate`` produces for it alone.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from djl_python.backends.pytorch.backend import PyTorchBackend
from tests.backends.slot_driver import Job, run_greedy
from tests.models import ARCHS


def _reference(model, prompt: list[int], new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and raw logits of ``prompt`` run alone; EOS neither ends nor is suppressed
    (an empty ``eos_token_id`` list: ``None`` would fall back to the model's EOS)."""
    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, eos_token_id=[], pad_token_id=0)
    out = model.generate(
        torch.tensor([prompt]), generation_config=config, return_dict_in_generate=True, output_logits=True
    )
    tokens = out.sequences[0, len(prompt) :].tolist()
    assert len(tokens) == new_tokens
    return tokens, torch.cat(out.logits)


def _prompt(seed: int, length: int) -> list[int]:
    return [(31 * seed + 17 * i) % 500 + 6 for i in range(length)]


def _staggered_jobs() -> list[Job]:
    # (prompt length, join step, new tokens), chosen so that with 4 slots the schedule does
    # a joint prefill, decodes gathered rows [0, 2, 3] and prefills E/F into freed slots 1 and 3.
    plan = [(5, 0, 12), (9, 0, 3), (14, 1, 9), (3, 2, 3), (6, 6, 5), (4, 6, 4)]
    return [Job(_prompt(i, n), join, new) for i, (n, join, new) in enumerate(plan)]


@pytest.mark.parametrize("native", [True, False], ids=["native", "hf"])
@pytest.mark.parametrize("arch", ARCHS)
def test_staggered_greedy_matches_generate(arch: str, native: bool, tiny_model_factory) -> None:
    """Both forwards of every architecture: the native one (the default for all of them) and the
    Hugging Face one (the fallback for a config the native forward refuses)."""
    path = tiny_model_factory(arch)
    backend = PyTorchBackend.load(path, max_slots=4, native=native)
    assert backend.info.extra["forward"] == ("native" if native else "hf")
    jobs = _staggered_jobs()
    cover = run_greedy(backend, jobs)
    assert cover.joint_prefill and cover.gathered_prefill and cover.gathered_decode
    assert cover.reused_slots == {1, 3}
    assert len({t for job in jobs for t in job.tokens}) > 10  # greedy picks vary: a discriminating check

    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for i, job in enumerate(jobs):
        tokens, logits = _reference(reference, job.prompt, job.max_new_tokens)
        assert job.tokens == tokens, f"{arch} job {i}"
        torch.testing.assert_close(torch.stack(job.logits), logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementations_agree(attn: str, tiny_model_factory) -> None:
    path = tiny_model_factory("llama")
    # native=False: the Hugging Face forward (the fallback) honours both attention kernels.
    backend = PyTorchBackend.load(path, max_slots=4, attn_implementation=attn, native=False)
    assert backend.info.extra["attn_implementation"] == attn and backend.info.extra["forward"] == "hf"
    jobs = _staggered_jobs()
    run_greedy(backend, jobs)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for job in jobs:
        assert job.tokens == _reference(reference, job.prompt, job.max_new_tokens)[0]


def test_smollm2_staggered_chat_matches_generate(smollm2_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    questions = ["What is the capital of France?", "Name three colors.", "Write a haiku about the sea."]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        for q in questions
    ]
    prompts = [list(p["input_ids"]) for p in prompts]  # transformers 5 returns a BatchEncoding
    backend = PyTorchBackend.load(smollm2_dir, max_slots=3, n_positions=256)
    assert backend.limits.eos_token_ids and 2 in backend.limits.eos_token_ids
    jobs = [Job(prompts[0], 0, 16), Job(prompts[1], 0, 16), Job(prompts[2], 3, 16)]
    run_greedy(backend, jobs)
    # A separate reference: with oneDNN-packed weights the backend released its module's linears.
    reference = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for job in jobs:
        assert job.tokens == _reference(reference, job.prompt, job.max_new_tokens)[0]
    assert "Paris" in tokenizer.decode(jobs[0].tokens)


@pytest.mark.parametrize("arch", ["llama", "bloom", "opt"])
def test_attention_width_grows_past_an_alignment_step(arch: str, tiny_model_factory) -> None:
    """A row crossing column 64 widens attention for the whole step (to n_positions=100 here)."""
    path = tiny_model_factory(arch)
    backend = PyTorchBackend.load(path, max_slots=2, n_positions=100)
    jobs = [Job(_prompt(1, 58), 0, 12), Job(_prompt(2, 3), 1, 8)]
    run_greedy(backend, jobs)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for job in jobs:
        tokens, logits = _reference(reference, job.prompt, job.max_new_tokens)
        assert job.tokens == tokens
        torch.testing.assert_close(torch.stack(job.logits), logits, atol=1e-4, rtol=1e-4)


def test_on_a_cpu_the_engine_prefills_the_cpu_budget_unless_configured(tiny_llama) -> None:
    """The CPU prefill budget (``cpu_policy.CPU_PREFILL_BUDGET``) reaches the engine's scheduler
    when the configuration sets none; a configured budget wins."""
    from djl_python.backends.pytorch.cpu_policy import CPU_PREFILL_BUDGET
    from djl_python.engine.engine import Engine

    backend = PyTorchBackend.load(tiny_llama, max_slots=2, n_positions=128)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    assert backend.limits.prefill_budget == CPU_PREFILL_BUDGET
    assert Engine(backend, tokenizer).scheduler.max_prefill_tokens == CPU_PREFILL_BUDGET
    assert Engine(backend, tokenizer, max_prefill_tokens=40).scheduler.max_prefill_tokens == 40
