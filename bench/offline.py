"""Offline throughput: our engine against the baselines a user would otherwise pick.

Every runner generates the same workload greedily with EOS ignored, so each
request yields exactly its ``max_new_tokens`` and "output tokens" means the
same useful work for all of them. Each runner warms up on a throw-away
request first; the clock covers submitting the whole workload to the last
token (prefill included).

Runners:

* ``engine``: ``Engine`` + ``PyTorchBackend`` (our continuous batching over slots);
* ``static_generate``: ``model.generate()`` on left-padded batches of the same size as
  the engine's slots, each batch running to its longest ``max_new_tokens``; only the
  tokens a request asked for count (the padding steps are the waste static batching
  pays);
* ``hf_continuous_batching``: transformers' own continuous batching, the manager
  behind ``model.generate_batch`` (used directly because ``generate_batch`` takes one
  ``max_new_tokens`` for all requests), with its KV pool bounded by
  ``ContinuousBatchingConfig(num_blocks=..., max_batch_tokens=...)``: left to itself it
  sizes the pool from total RAM (several GB on CPU);
* ``sequential_generate``: ``model.generate()`` one request at a time (batch 1).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.workload import Workload

logger = logging.getLogger(__name__)

_WARMUP_PROMPT = list(range(1000, 1016))
_HF_PAGE_SIZE = 256  # transformers' default page: tokens per block (all layers)


def _result(name: str, workload: Workload, elapsed: float, produced: int, **extra: Any) -> dict[str, Any]:
    """One runner's figures. ``produced`` is checked against the workload: a runner that
    stopped early (or ran long) would make the comparison meaningless."""
    expected = workload.output_tokens
    if produced != expected:
        raise RuntimeError(f"{name}: produced {produced} output tokens, the workload asks for {expected}")
    return {
        "name": name,
        "requests": len(workload.requests),
        "output_tokens": produced,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(produced / elapsed, 2),
        **extra,
    }


def load_hf_model(model_dir: Path, attn_implementation: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation=attn_implementation
    )
    return model.eval()


def _greedy_config(max_new_tokens: int, pad_token_id: int) -> Any:
    from transformers import GenerationConfig

    # eos_token_id=[] disables stopping without the warning a negative id triggers.
    return GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=[], pad_token_id=pad_token_id
    )


# -- our engine ------------------------------------------------------------------------------


def run_engine(model_dir: Path, tokenizer: Any, workload: Workload, max_slots: int) -> dict[str, Any]:
    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.engine.engine import Engine
    from djl_python.engine.request import SamplingParams

    # Defaults as djl-serve (n_positions 2048, a prefill budget of 512 tokens a step), so
    # offline and served runs schedule alike. n_positions costs memory (3 GB of K/V at 32
    # slots), not time: attention reads only the columns in use.
    backend = PyTorchBackend.load(model_dir, max_slots=max_slots, dtype="fp32")
    engine = Engine(backend, tokenizer)
    engine.generate([_WARMUP_PROMPT], SamplingParams(max_new_tokens=8, ignore_eos=True))
    steps = 0
    produced = 0
    start = time.perf_counter()
    for req in workload.requests:
        engine.add_request(list(req.prompt_ids), SamplingParams(max_new_tokens=req.max_new_tokens, ignore_eos=True))
    while engine.has_unfinished():
        for out in engine.step():
            produced += len(out.token_ids)
            if out.error:
                raise RuntimeError(f"engine request {out.request_id} failed: {out.error}")
        steps += 1
    elapsed = time.perf_counter() - start
    backend.close()
    return _result(f"engine (max_slots={max_slots})", workload, elapsed, produced, max_slots=max_slots, steps=steps)


# -- transformers generate() -----------------------------------------------------------------


def run_static_generate(model: Any, workload: Workload, batch_size: int, pad_token_id: int) -> dict[str, Any]:
    """Left-padded static batches; each runs until its longest request is done."""
    model.generate(torch.tensor([_WARMUP_PROMPT]), generation_config=_greedy_config(8, pad_token_id))
    useful = 0
    computed = 0  # rows x steps actually decoded, padding rows included
    start = time.perf_counter()
    for first in range(0, len(workload.requests), batch_size):
        batch = workload.requests[first : first + batch_size]
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, req in enumerate(batch):
            ids[row, width - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
            mask[row, width - len(req.prompt_ids) :] = 1
        longest = max(r.max_new_tokens for r in batch)
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=_greedy_config(longest, pad_token_id)
        )
        if out.shape[1] - width != longest:
            raise RuntimeError(f"generate stopped after {out.shape[1] - width} of {longest} tokens")
        useful += sum(r.max_new_tokens for r in batch)
        computed += len(batch) * longest
    elapsed = time.perf_counter() - start
    return _result(
        f"generate() static batches of {batch_size}",
        workload,
        elapsed,
        useful,
        batch_size=batch_size,
        computed_tokens=computed,
        useful_fraction=round(useful / computed, 3),
    )


def run_sequential_generate(model: Any, workload: Workload, pad_token_id: int) -> dict[str, Any]:
    model.generate(torch.tensor([_WARMUP_PROMPT]), generation_config=_greedy_config(8, pad_token_id))
    produced = 0
    start = time.perf_counter()
    for req in workload.requests:
        ids = torch.tensor([req.prompt_ids])
        out = model.generate(input_ids=ids, generation_config=_greedy_config(req.max_new_tokens, pad_token_id))
        produced += out.shape[1] - ids.shape[1]
    elapsed = time.perf_counter() - start
    return _result("generate() one request at a time", workload, elapsed, produced)


# -- transformers continuous batching --------------------------------------------------------


def hf_cb_config(workload: Workload, max_requests: int) -> Any:
    """A pool that holds ``max_requests`` of the workload's longest sequences, no more.

    Without ``num_blocks`` transformers sizes the pool from total RAM (5.9-6.2 GB RSS
    measured for a 10M-parameter model); this bounds it to what the workload needs.
    """
    from transformers import ContinuousBatchingConfig

    longest = max(len(r.prompt_ids) + r.max_new_tokens for r in workload.requests)
    blocks_per_request = math.ceil(longest / _HF_PAGE_SIZE)
    return ContinuousBatchingConfig(
        page_size=_HF_PAGE_SIZE,
        num_blocks=blocks_per_request * max_requests + 1,
        max_batch_tokens=1024,
        max_requests_per_batch=max_requests,
        allow_block_sharing=False,  # random prompts share no prefix; hashing blocks would be pure cost
    )


def run_hf_continuous_batching(model: Any, workload: Workload, max_requests: int, pad_token_id: int) -> dict[str, Any]:
    gen_config = _greedy_config(max(r.max_new_tokens for r in workload.requests), pad_token_id)
    gen_config.eos_token_id = -1  # the manager's own "no EOS" value
    cb_config = hf_cb_config(workload, max_requests)
    with torch.inference_mode(), model.continuous_batching_context_manager(
        generation_config=gen_config, continuous_batching_config=cb_config, block=True, timeout=30, warmup=False
    ) as manager:
        _drain(manager, [manager.add_request(_WARMUP_PROMPT, max_new_tokens=8, eos_token_id=-1)])
        start = time.perf_counter()
        ids = [
            manager.add_request(list(r.prompt_ids), max_new_tokens=r.max_new_tokens, eos_token_id=-1)
            for r in workload.requests
        ]
        results = _drain(manager, ids)
        elapsed = time.perf_counter() - start
    produced = sum(len(results[i].generated_tokens) for i in ids)
    return _result(
        "transformers continuous batching",
        workload,
        elapsed,
        produced,
        max_requests_per_batch=max_requests,
        num_blocks=cb_config.num_blocks,
        max_batch_tokens=cb_config.max_batch_tokens,
    )


def _drain(manager: Any, request_ids: list[str], timeout_s: float = 900.0) -> dict[str, Any]:
    pending, results = set(request_ids), {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"transformers continuous batching: {len(pending)} requests unfinished")
        result = manager.get_result(timeout=1)
        if result is None:
            if not manager.is_running():
                raise RuntimeError("transformers continuous batching: the generation thread died")
            continue
        if result.is_finished() and result.request_id in pending:
            if result.error:
                raise RuntimeError(f"transformers continuous batching: {result.error}")
            pending.discard(result.request_id)
            results[result.request_id] = result
    return results


# -- the whole comparison --------------------------------------------------------------------


def run_offline(
    model_dir: Path,
    tokenizer: Any,
    workload: Workload,
    engine_slots: tuple[int, ...],
    sequential_requests: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """All runners on ``workload``; ratios are against the fastest engine configuration."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    engines = []
    for slots in engine_slots:
        log(f"offline: engine, max_slots={slots}")
        engines.append(run_engine(model_dir, tokenizer, workload, slots))
        log(f"  {engines[-1]['tokens_per_s']} tok/s")
        gc.collect()
    best = max(engines, key=lambda r: r["tokens_per_s"])
    slots = best["max_slots"]

    model = load_hf_model(model_dir)
    baselines = []
    log(f"offline: generate() static batches of {slots}")
    baselines.append(run_static_generate(model, workload, slots, pad))
    log(f"  {baselines[-1]['tokens_per_s']} tok/s")
    log("offline: transformers continuous batching")
    baselines.append(run_hf_continuous_batching(model, workload, slots, pad))
    log(f"  {baselines[-1]['tokens_per_s']} tok/s")
    log(f"offline: generate() one at a time, first {sequential_requests} requests")
    baselines.append(run_sequential_generate(model, workload.head(sequential_requests), pad))
    log(f"  {baselines[-1]['tokens_per_s']} tok/s")
    del model
    gc.collect()

    keys = ("static_generate", "hf_continuous_batching", "sequential_generate")
    return {
        "workload": workload.summary(),
        "engine_runs": engines,
        "engine": best,
        "baselines": dict(zip(keys, baselines)),
        "speedup": {k: round(best["tokens_per_s"] / b["tokens_per_s"], 2) for k, b in zip(keys, baselines)},
    }
