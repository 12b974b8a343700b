"""A minimal greedy continuous-batching loop over a ``Backend``, for tests.

It mirrors what the engine does with slots (lowest free slot first, joint prefill of the
requests that join at one step, decode of every other running request, release when done)
and records which call shapes the schedule exercised, so a test can assert that it really
covered joint prefill, gathered (non-contiguous) rows and slot reuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from djl_python.backends.base import Backend


@dataclass
class Job:
    prompt: list[int]
    join_step: int
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    slot: int | None = None


@dataclass
class Coverage:
    joint_prefill: bool = False
    gathered_prefill: bool = False
    gathered_decode: bool = False
    reused_slots: set[int] = field(default_factory=set)


def _contiguous(slots: list[int]) -> bool:
    return slots[-1] - slots[0] == len(slots) - 1


def run_greedy(backend: Backend, jobs: list[Job]) -> Coverage:
    """Run ``jobs`` to completion with greedy argmax; fill each job's tokens and logits."""
    cover, used = Coverage(), set()
    free = list(range(backend.limits.max_slots))
    running: list[Job] = []
    step = 0
    while any(len(j.tokens) < j.max_new_tokens for j in jobs):
        joining = [j for j in jobs if j.join_step == step]
        if len(joining) > len(free):
            raise RuntimeError("test schedule needs more slots")
        for job in joining:
            job.slot = free.pop(0)
            cover.reused_slots |= {job.slot} & used
            used.add(job.slot)
        decoding = sorted(running, key=lambda j: j.slot)
        if joining:
            joining.sort(key=lambda j: j.slot)
            slots = [j.slot for j in joining]
            cover.joint_prefill |= len(slots) > 1
            cover.gathered_prefill |= not _contiguous(slots)
            _take(joining, backend.prefill(slots, [j.prompt for j in joining]))
        if decoding:
            slots = [j.slot for j in decoding]
            cover.gathered_decode |= not _contiguous(slots)
            positions = [len(j.prompt) + len(j.tokens) - 1 for j in decoding]
            _take(decoding, backend.decode(slots, [j.tokens[-1] for j in decoding], positions))
        running = [j for j in running + joining if len(j.tokens) < j.max_new_tokens]
        for job in decoding + joining:
            if len(job.tokens) == job.max_new_tokens and job.slot not in free:
                backend.release(job.slot)
                free.append(job.slot)
                free.sort()
        step += 1
    return cover


def _take(jobs: list[Job], logits: torch.Tensor) -> None:
    assert logits.dtype == torch.float32 and logits.shape[0] == len(jobs)
    for job, row in zip(jobs, logits):
        job.logits.append(row.clone())
        job.tokens.append(int(row.argmax()))
