"""The fixed, seeded workload every benchmark runs, and the settings of a run.

A workload is a list of requests, each a prompt and a ``max_new_tokens``. Prompts
are text built from single-token words (" apple", " river", ...), so the same
prompt has exactly the intended number of tokens whether a runner sends token
ids (offline) or text (HTTP). Generation ignores EOS, so every request produces
exactly its ``max_new_tokens`` and all runners do the same useful work
(nano-vllm's ``bench.py`` uses the same trick with random token prompts).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_SEED = 20240607


@dataclass(frozen=True)
class WorkloadSpec:
    """How to draw a workload: counts and inclusive uniform ranges, all seeded."""

    num_requests: int
    prompt_len: tuple[int, int]
    new_tokens: tuple[int, int]
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class Request:
    """One benchmark request. ``prompt_ids`` is ``tokenizer.encode(prompt)``; its length is exact."""

    prompt: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int


@dataclass
class Workload:
    spec: WorkloadSpec
    requests: list[Request]

    @property
    def output_tokens(self) -> int:
        """Useful output tokens: what every runner must generate (EOS is ignored)."""
        return sum(r.max_new_tokens for r in self.requests)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(r.prompt_ids) for r in self.requests)

    def head(self, n: int) -> Workload:
        """The first ``n`` requests (same draws, fewer of them)."""
        return Workload(self.spec, self.requests[:n])

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self.spec),
            "num_requests": len(self.requests),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class BenchSettings:
    """Everything that differs between ``python -m bench`` and ``python -m bench --quick``.

    Attributes:
        offline: the workload of the offline comparison (and the shape the serving runs draw from).
        engine_slots: ``max_slots`` values tried for our engine; the fastest is reported.
        sequential_requests: how many of the offline requests the one-at-a-time baseline runs.
            Batch-1 ``generate`` is slow; its tokens/s is a per-token rate, so a prefix of the
            workload measures it without spending minutes on it.
        step_batches: batch sizes of the decode-step overhead measurement.
        step_iters: decode steps timed per batch size (medians are reported).
        step_context: prompt length every request of the step measurement starts from.
        serving_streams: concurrent streaming clients per serving run.
        serving_requests_per_stream: run ``C`` serves the first ``C *`` this many offline requests,
            so the run with the most streams serves the whole offline workload.
        serving_timeout_s: wall-clock bound of one serving run.
        peer_dtypes, peer_streams, peer_requests_per_stream, peer_timeout_s: the side-by-side
            runs against vLLM CPU (:mod:`bench.peer`), per dtype and concurrency.
        constrained_batch, constrained_steps, constrained_rounds: constrained decoding's per-step
            cost (:mod:`bench.constrained`): batch size, steps timed per round, rounds.
        multiturn_conversations, multiturn_turns: the multi-turn chat workload (:mod:`bench.multiturn`).
        latency_repeats: one-sequence requests per workload and server (:mod:`bench.latency_peer`).
        large_streams: concurrencies of the 1B-class model's side-by-side run (:mod:`bench.large_model`).
        large_dtypes: the dtypes both servers serve it in: fp32, and bf16 (the real checkpoint's dtype,
            and the one a CPU with AVX512-BF16 serves it in), each against its own target row.
        roofline_steps, roofline_batches: decode steps timed per batch size, and the batch sizes
            (:mod:`bench.roofline`; the 1B-class model at the first two).
    """

    offline: WorkloadSpec
    engine_slots: tuple[int, ...]
    sequential_requests: int
    step_batches: tuple[int, ...]
    step_iters: int
    step_context: int
    serving_streams: tuple[int, ...]
    serving_requests_per_stream: int
    serving_timeout_s: float
    peer_dtypes: tuple[str, ...]
    peer_streams: tuple[int, ...]
    peer_requests_per_stream: int
    peer_timeout_s: float
    constrained_batch: int = 16
    constrained_steps: int = 20
    constrained_rounds: int = 5
    multiturn_conversations: int = 16
    multiturn_turns: int = 4
    latency_repeats: int = 3
    large_streams: tuple[int, ...] = (16,)
    large_dtypes: tuple[str, ...] = ("fp32", "bf16")
    roofline_steps: int = 20
    roofline_batches: tuple[int, ...] = (1, 16, 32)


FULL = BenchSettings(
    offline=WorkloadSpec(num_requests=64, prompt_len=(16, 256), new_tokens=(16, 256)),
    engine_slots=(32, 64),
    sequential_requests=8,
    step_batches=(1, 8, 32),
    step_iters=40,
    step_context=128,
    serving_streams=(1, 4, 16, 32),
    serving_requests_per_stream=2,
    serving_timeout_s=240.0,
    peer_dtypes=("fp32", "bf16"),
    peer_streams=(16, 32),
    peer_requests_per_stream=1,
    peer_timeout_s=600.0,
)

QUICK = BenchSettings(
    offline=WorkloadSpec(num_requests=8, prompt_len=(16, 64), new_tokens=(8, 32)),
    engine_slots=(8,),
    sequential_requests=2,
    step_batches=(1, 8),
    step_iters=10,
    step_context=32,
    serving_streams=(1, 8),
    serving_requests_per_stream=1,
    serving_timeout_s=60.0,
    peer_dtypes=("fp32",),
    peer_streams=(8,),
    peer_requests_per_stream=1,
    peer_timeout_s=300.0,
    constrained_batch=8,
    constrained_steps=10,
    constrained_rounds=1,
    multiturn_conversations=4,
    multiturn_turns=2,
    latency_repeats=1,
    large_streams=(2,),
    large_dtypes=("fp32",),
    roofline_steps=5,
    roofline_batches=(1, 8),
)


def word_pool(tokenizer: Any, size: int = 2048) -> list[str]:
    """Lower-case words that encode to exactly one token with a leading space.

    Taken from the vocabulary in sorted order so the pool (and so the prompts) only
    depends on the tokenizer, never on dict ordering.
    """
    candidates = sorted(
        piece[1:]
        for piece in tokenizer.get_vocab()
        if piece.startswith("\u0120") and piece[1:].isalpha() and piece[1:].islower() and len(piece) >= 5
    )
    pool: list[str] = []
    for word in candidates:
        if len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1:
            pool.append(word)
            if len(pool) == size:
                break
    if len(pool) < 64:
        raise ValueError(f"the tokenizer has only {len(pool)} single-token words; cannot build prompts")
    return pool


def make_workload(tokenizer: Any, spec: WorkloadSpec) -> Workload:
    """Draw ``spec.num_requests`` requests; the same spec and tokenizer always give the same workload."""
    rng = random.Random(spec.seed)
    pool = word_pool(tokenizer)
    requests = []
    for _ in range(spec.num_requests):
        n_prompt = rng.randint(*spec.prompt_len)
        n_new = rng.randint(*spec.new_tokens)
        prompt = "".join(" " + rng.choice(pool) for _ in range(n_prompt))
        ids = tuple(tokenizer.encode(prompt, add_special_tokens=False))
        requests.append(Request(prompt=prompt, prompt_ids=ids, max_new_tokens=n_new))
    return Workload(spec, requests)
