"""Decode-step overhead: what the engine adds on top of the model forward.

For each batch size ``B``, ``B`` requests decode from the same positions three ways,
and the median time of one step is reported:

* ``engine_step``: ``engine.step()`` in steady-state decode (every request running,
  none waiting, none finishing): scheduler, ``backend.decode``, sampler, stop checks,
  incremental detokenisation and ``RequestOutput`` construction;
* ``backend_decode``: ``backend.decode(slots, tokens, positions)`` alone, on ``B`` other
  slots of the same backend at the same positions, alternating with the engine's steps;
* ``hf_forward``: the bare Hugging Face forward with its own ``DynamicCache`` at the
  same batch and context length, for reference (what the model costs without slots).

``engine_step / backend_decode`` is the engine's overhead factor (target <= 1.10 at
batch 8 and 32). Per-step times are medians over many steps, so a stray slow step
(another process, the garbage collector) does not move them.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

WARMUP_STEPS = 3


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _prompt(length: int, offset: int) -> list[int]:
    # Plain word-piece ids well inside the vocabulary; the content does not matter here.
    return [1000 + (offset * 7 + i) % 20000 for i in range(length)]


def time_engine_and_decode(engine: Any, batch: int, context: int, iters: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of ``engine.step()`` and of a bare ``backend.decode()``, interleaved.

    The engine's ``batch`` requests take slots ``0..batch-1``; the bare decode drives slots
    ``batch..2*batch-1`` of the same backend behind the engine's back (the scheduler never
    hands those out: only ``batch`` requests exist). Both sit at the same positions at every
    step, and alternating them makes a burst of machine noise hit both alike.
    """
    from djl_python.engine.request import SamplingParams

    backend = engine.backend
    params = SamplingParams(max_new_tokens=WARMUP_STEPS + iters + 8, ignore_eos=True)
    ids = [engine.add_request(_prompt(context, i), params) for i in range(batch)]
    engine.step()  # admits and prefills all of them (``run_step_overhead`` sizes the prefill budget)
    if engine.num_waiting or engine.num_running != batch:
        raise RuntimeError(f"step overhead: {engine.num_running} running, {engine.num_waiting} waiting after prefill")
    bare = list(range(batch, 2 * batch))
    backend.prefill(bare, [_prompt(context, i) for i in range(batch)])
    tokens = [1234] * batch
    engine_samples, decode_samples = [], []
    # The engine's first decode writes position ``context``; so does the bare one's.
    for k in range(WARMUP_STEPS + iters):
        start = time.perf_counter()
        outputs = engine.step()
        engine_s = time.perf_counter() - start
        if len(outputs) != batch or any(o.finished for o in outputs):
            raise RuntimeError("step overhead: the batch changed during the measurement")
        start = time.perf_counter()
        logits = backend.decode(bare, tokens, [context + k] * batch)
        if logits.device.type == "cuda":
            torch.cuda.synchronize()
        decode_s = time.perf_counter() - start
        if k >= WARMUP_STEPS:
            engine_samples.append(engine_s)
            decode_samples.append(decode_s)
    for request_id in ids:
        engine.abort(request_id)
    engine.step()  # reports the aborts; the engine's slots are free again
    for slot in bare:
        backend.release(slot)
    return engine_samples, decode_samples


@torch.inference_mode()
def time_hf_forward(model: torch.nn.Module, batch: int, context: int, iters: int) -> list[float]:
    """Per-call seconds of the bare HF forward (``DynamicCache``) decoding one token per row."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    prompt = torch.tensor([_prompt(context, i) for i in range(batch)])
    model(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1)
    token = torch.full((batch, 1), 1234, dtype=torch.long)
    samples = []
    for k in range(WARMUP_STEPS + iters):
        start = time.perf_counter()
        model(input_ids=token, cache=cache, use_cache=True)
        if k >= WARMUP_STEPS:
            samples.append(time.perf_counter() - start)
    return samples


def run_step_overhead(
    model_dir: Path,
    tokenizer: Any,
    batches: tuple[int, ...],
    iters: int,
    context: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.engine.engine import Engine

    n_positions = 512  # context + WARMUP_STEPS + iters, with room; the default 2048 only costs memory
    if context + WARMUP_STEPS + iters + 8 > n_positions:
        raise ValueError(f"step overhead: context {context} + {iters} steps exceeds n_positions {n_positions}")
    # Twice the largest batch: the engine's requests and the bare decode's rows side by side.
    backend = PyTorchBackend.load(model_dir, max_slots=2 * max(batches), dtype="fp32", n_positions=n_positions)
    # A budget that admits the largest batch in one step, so every request sits at the same position.
    budget = max(batches) * backend.limits.prefill_cost(context)
    engine = Engine(backend, tokenizer, max_prefill_tokens=budget)
    # The Hugging Face reference runs its own copy: a native backend with packed weights has
    # released its module's linears.
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows = []
    for batch in batches:
        log(f"step overhead: batch {batch}")
        engine_samples, decode_samples = time_engine_and_decode(engine, batch, context, iters)
        engine_ms, decode_ms = _median_ms(engine_samples), _median_ms(decode_samples)
        hf_ms = _median_ms(time_hf_forward(reference, batch, context, iters))
        rows.append(
            {
                "batch": batch,
                "engine_step_ms": engine_ms,
                "backend_decode_ms": decode_ms,
                "hf_forward_ms": hf_ms,
                "overhead_ms": round(engine_ms - decode_ms, 3),
                "engine_over_decode": round(engine_ms / decode_ms, 3),
                "decode_over_hf": round(decode_ms / hf_ms, 3),
            }
        )
        log(f"  engine {engine_ms} ms, decode {decode_ms} ms, hf {hf_ms} ms")
    backend.close()
    return {"context": context, "iters": iters, "warmup_steps": WARMUP_STEPS, "rows": rows}
