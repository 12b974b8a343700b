"""Constrained decoding's cost per decode step, against unconstrained decoding, in one engine.

``B`` requests (16 by default) decode in steady state five ways, in alternating rounds so that
machine noise hits all alike, and the median ``engine.step()`` time (TPOT for every request in
the batch) is reported:

* ``free``: greedy, no constraint;
* ``constrained``: greedy, every request under a JSON schema (an object holding a list of at
  least 400 small objects, so no request finishes during the measurement); a greedy row is
  masked only when its grammar refuses its argmax;
* ``mixed``: half and half (what a free request pays for constrained neighbours);
* ``free_sampled`` and ``constrained_sampled``: the same sampled (temperature 0.7, top-p 0.95),
  where every constrained row is masked at every step.

Alongside, per step, the time llguidance spent computing the grammar masks (all rows in parallel,
in a background thread while the model runs: it adds to the step only where the forward leaves no
core idle) and the time the sampler spent applying them. Greedy decoding, fp32, ``ignore_eos``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 400, "items": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "score": {"type": "integer", "minimum": 0,
                                                                               "maximum": 100}},
        "required": ["name", "score"], "additionalProperties": False}}},
    "required": ["items"],
    "additionalProperties": False,
}
WARMUP_STEPS = 4
PROMPT = "List some players and their scores as JSON:"


def _timed(engine: Any, totals: dict[str, float]) -> Callable[[], None]:
    """Wrap the engine's mask computation and the sampler's mask application with timers."""
    grammars, sampler = engine.grammars, engine.sampler
    fill, apply = grammars.fill_masks, sampler._apply_grammar

    def timed_fill(matchers):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return fill(matchers)
        finally:
            totals["fill"] += time.perf_counter() - start

    def timed_apply(logits, allowed):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return apply(logits, allowed)
        finally:
            totals["apply"] += time.perf_counter() - start

    grammars.fill_masks = timed_fill
    sampler._apply_grammar = timed_apply

    def restore() -> None:
        grammars.fill_masks, sampler._apply_grammar = fill, apply

    return restore


def _round(engine: Any, prompt_ids: list[int], constrained: int, batch: int, steps: int,
           sampled: bool = False) -> tuple[list[float], dict]:
    from djl_python.engine.constraint import Constraint
    from djl_python.engine.request import SamplingParams

    n = WARMUP_STEPS + steps + 4
    sampling = {"do_sample": True, "temperature": 0.7, "top_p": 0.95} if sampled else {}
    free = SamplingParams(max_new_tokens=n, ignore_eos=True, **sampling)
    schema = SamplingParams(max_new_tokens=n, ignore_eos=True, constraint=Constraint.json_schema(SCHEMA, "bench"),
                            **sampling)
    ids = [engine.add_request(prompt_ids, schema if i < constrained else free) for i in range(batch)]
    while engine.num_waiting:
        engine.step()
    totals = {"fill": 0.0, "apply": 0.0}
    restore = _timed(engine, totals)
    samples = []
    try:
        for k in range(WARMUP_STEPS + steps):
            if k == WARMUP_STEPS:
                totals.update(fill=0.0, apply=0.0)
            start = time.perf_counter()
            outputs = engine.step()
            elapsed = time.perf_counter() - start
            if len(outputs) != batch or any(o.finished for o in outputs):
                raise RuntimeError("constrained bench: the batch changed during the measurement")
            if k >= WARMUP_STEPS:
                samples.append(elapsed)
    finally:
        restore()
    for rid in ids:
        engine.abort(rid)
    engine.step()
    return samples, {k: v / steps for k, v in totals.items()}


def run_constrained(model_dir: Path, tokenizer: Any, batch: int, steps: int, rounds: int,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.engine.engine import Engine

    backend = PyTorchBackend.load(model_dir, max_slots=batch, dtype="fp32", n_positions=512)
    engine = Engine(backend, tokenizer, max_prefill_tokens=batch * 64)
    prompt_ids = tokenizer.encode(PROMPT)
    kinds = {"free": (0, False), "mixed": (batch // 2, False), "constrained": (batch, False),
             "free_sampled": (0, True), "constrained_sampled": (batch, True)}
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    mask_ms: dict[str, list[dict]] = {k: [] for k in kinds}
    _round(engine, prompt_ids, batch, batch, 2)  # compiles the grammar and builds llguidance's tokenizer once
    for r in range(rounds):
        for kind, (constrained, sampled) in kinds.items():
            got, masks = _round(engine, prompt_ids, constrained, batch, steps, sampled)
            samples[kind] += got
            mask_ms[kind].append(masks)
        log(f"constrained bench: round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {statistics.median(v) * 1000:.1f} ms" for k, v in samples.items()))
    backend.close()
    tpot = {k: round(statistics.median(v) * 1000, 2) for k, v in samples.items()}
    masks = {k: {part: round(statistics.median(m[part] for m in v) * 1000, 3) for part in ("fill", "apply")}
             for k, v in mask_ms.items()}
    return {
        "batch": batch, "steps_per_round": steps, "rounds": rounds, "schema": "object with a list of >= 400 objects",
        "tpot_ms": tpot,
        "constrained_over_free": round(tpot["constrained"] / tpot["free"], 3),
        "mixed_over_free": round(tpot["mixed"] / tpot["free"], 3),
        "sampled_constrained_over_free": round(tpot["constrained_sampled"] / tpot["free_sampled"], 3),
        "mask_ms_per_step": masks,
    }
