"""The scheduler alone: slots, admission order (arrival, or shortest prompt first within a bound),
prefill budget, positions. No model, no torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from djl_python.backends.base import BackendLimits
from djl_python.engine.request import RequestStatus, SamplingParams
from djl_python.engine.scheduler import Scheduler
from djl_python.engine.sequence import Sequence


def make_seq(rid: str, prompt_len: int = 4, max_tokens: int = 8) -> Sequence:
    # The scheduler never touches the detokenizer or stop checker.
    prompt = list(range(1, prompt_len + 1))
    return Sequence(rid, prompt, SamplingParams(), max_tokens, detokenizer=None, stop_checker=None)  # type: ignore[arg-type]


def limits(max_slots: int = 4, n_positions: int = 64, buckets=(16, 32), max_prefill_slots=None) -> BackendLimits:
    return BackendLimits(max_slots, n_positions, tuple(buckets), 100, (2,), max_prefill_slots)


def run_prefill(out) -> None:
    """Stand-in for the engine: prompts fill to their chunk's end, and every decoded sequence, or
    prefilled one whose prompt is complete, gets a token."""
    for seq in out.prefill:
        seq.prefilled = seq.prefill_end
    for seq in out.prefill + out.decode:
        if seq.prefill_done:
            seq.output_ids.append(7)


def chunking(max_slots: int = 4) -> BackendLimits:
    return replace(limits(max_slots=max_slots, n_positions=128, buckets=(64,)), padded_prefill=False,
                   can_chunk_prefill=True)


def test_importing_the_scheduler_does_not_import_torch() -> None:
    code = "import sys, djl_python.engine.scheduler, djl_python.engine; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_slots_are_assigned_in_ascending_order_and_reused_lowest_first() -> None:
    sched = Scheduler(limits(max_slots=4))
    seqs = [make_seq(f"r{i}") for i in range(4)]
    for s in seqs:
        sched.add(s)
    out = sched.schedule()
    assert [s.slot for s in out.prefill] == [0, 1, 2, 3]
    assert all(s.status == RequestStatus.RUNNING for s in seqs)
    run_prefill(out)
    for s in (seqs[2], seqs[1]):
        s.status = RequestStatus.FINISHED_EOS
        sched.finish(s)
    late = [make_seq("a"), make_seq("b")]
    for s in late:
        sched.add(s)
    out = sched.schedule()
    assert [s.slot for s in out.prefill] == [1, 2]
    assert [s.slot for s in out.decode] == [0, 3]


def test_admission_is_fifo_and_waits_for_a_free_slot() -> None:
    sched = Scheduler(limits(max_slots=2), policy="fcfs")
    seqs = [make_seq(f"r{i}") for i in range(5)]
    for s in seqs:
        sched.add(s)
    out = sched.schedule()
    assert [s.request_id for s in out.prefill] == ["r0", "r1"]
    assert sched.num_waiting == 3 and sched.num_running == 2
    run_prefill(out)
    assert sched.schedule().prefill == []  # no free slot: nothing admitted
    seqs[1].status = RequestStatus.FINISHED_LENGTH
    sched.finish(seqs[1])
    out = sched.schedule()
    assert [s.request_id for s in out.prefill] == ["r2"] and out.prefill[0].slot == 1


def test_prefill_budget_counts_padded_buckets_and_never_starves() -> None:
    # Buckets 16/32; budget 40: a 20-token prompt costs 32, a 4-token one 16.
    sched = Scheduler(limits(max_slots=8), max_prefill_tokens=40, policy="fcfs")
    long_a, long_b, short = make_seq("a", 20), make_seq("b", 20), make_seq("c", 4)
    for s in (long_a, long_b, short):
        sched.add(s)
    out = sched.schedule()
    # "a" (32) fits; "b" (32) would exceed 40 and "c" may not overtake it.
    assert [s.request_id for s in out.prefill] == ["a"]
    run_prefill(out)
    out = sched.schedule()
    assert [s.request_id for s in out.prefill] == ["b"]
    assert [s.request_id for s in out.decode] == ["a"]  # running stream still decodes this step


def test_one_request_is_admitted_even_when_it_exceeds_the_budget() -> None:
    sched = Scheduler(limits(max_slots=2), max_prefill_tokens=1, policy="fcfs")
    sched.add(make_seq("big", 30))
    sched.add(make_seq("small", 2))
    assert [s.request_id for s in sched.schedule().prefill] == ["big"]


def test_default_budget_is_the_longest_prompt_or_512() -> None:
    assert Scheduler(limits(buckets=(16, 32))).max_prefill_tokens == 512
    assert Scheduler(limits(n_positions=2048, buckets=(128, 1024))).max_prefill_tokens == 1024
    # A backend that packs prompts pays real tokens: 512, however large its buckets.
    packed = replace(limits(n_positions=2048, buckets=(128, 1024)), padded_prefill=False)
    assert Scheduler(packed).max_prefill_tokens == 512


def test_the_backends_budget_is_the_default_and_the_configuration_wins() -> None:
    suggested = replace(limits(n_positions=2048, buckets=(128, 1024)), padded_prefill=False, prefill_budget=256)
    assert Scheduler(suggested).max_prefill_tokens == 256
    assert Scheduler(suggested, max_prefill_tokens=600).max_prefill_tokens == 600
    with pytest.raises(ValueError, match="prefill_budget"):
        replace(suggested, prefill_budget=0)


def test_packed_prefill_budget_counts_real_tokens() -> None:
    # Same queue and budget as the padded test above: 20 + 20 tokens fit 40 when nothing is padded.
    sched = Scheduler(replace(limits(max_slots=8), padded_prefill=False), max_prefill_tokens=40, policy="fcfs")
    for s in (make_seq("a", 20), make_seq("b", 20), make_seq("c", 4)):
        sched.add(s)
    assert [s.request_id for s in sched.schedule().prefill] == ["a", "b"]


def test_max_prefill_slots_is_respected() -> None:
    sched = Scheduler(limits(max_slots=8, max_prefill_slots=2))
    for i in range(5):
        sched.add(make_seq(f"r{i}"))
    sizes = []
    while sched.num_waiting:
        out = sched.schedule()
        sizes.append(len(out.prefill))
        run_prefill(out)
    assert sizes == [2, 2, 1]


def test_running_streams_decode_every_step_while_others_prefill() -> None:
    sched = Scheduler(limits(max_slots=4), max_prefill_tokens=16)
    first = make_seq("first")
    sched.add(first)
    run_prefill(sched.schedule())
    for i in range(3):
        sched.add(make_seq(f"new{i}"))
    for _ in range(3):
        out = sched.schedule()
        assert first in out.decode and len(out.prefill) == 1
        run_prefill(out)


def test_add_rejects_a_sequence_that_could_pass_n_positions() -> None:
    sched = Scheduler(limits(n_positions=32))
    sched.add(make_seq("fits", prompt_len=8, max_tokens=24))
    with pytest.raises(ValueError, match="n_positions"):
        sched.add(make_seq("too-long", prompt_len=8, max_tokens=25))


def test_finish_of_a_waiting_sequence_removes_it_and_finish_is_idempotent() -> None:
    sched = Scheduler(limits(max_slots=1))
    a, b, c = make_seq("a"), make_seq("b"), make_seq("c")
    for s in (a, b, c):
        sched.add(s)
    run_prefill(sched.schedule())
    b.status = RequestStatus.FINISHED_ABORTED
    sched.finish(b)
    sched.finish(b)
    a.status = RequestStatus.FINISHED_ABORTED
    sched.finish(a)  # frees slot 0 at once
    sched.finish(a)
    out = sched.schedule()
    assert [s.request_id for s in out.prefill] == ["c"] and c.slot == 0
    assert not sched.waiting


def test_clear_drops_everything_and_frees_all_slots() -> None:
    sched = Scheduler(limits(max_slots=2))
    for i in range(3):
        sched.add(make_seq(f"r{i}"))
    run_prefill(sched.schedule())
    dropped = sched.clear()
    assert [s.request_id for s in dropped] == ["r2", "r0", "r1"]
    assert not sched.has_unfinished()
    sched.add(make_seq("again"))
    assert sched.schedule().prefill[0].slot == 0


def test_a_step_with_either_part_is_not_empty_and_either_queue_is_unfinished() -> None:
    from djl_python.engine.scheduler import SchedulerOutput

    seq = make_seq("r")
    assert SchedulerOutput().is_empty
    assert not SchedulerOutput(prefill=[seq]).is_empty and not SchedulerOutput(decode=[seq]).is_empty
    sched = Scheduler(limits(max_slots=1))
    assert not sched.has_unfinished()
    sched.add(seq)
    assert sched.has_unfinished()  # waiting only
    out = sched.schedule()
    run_prefill(out)
    assert sched.has_unfinished()  # running only


def test_add_refuses_a_sequence_that_is_not_new() -> None:
    sched = Scheduler(limits())
    holding_a_slot = make_seq("a")
    holding_a_slot.slot = 2  # still WAITING, but a slot was already assigned
    with pytest.raises(ValueError, match="not a new waiting sequence"):
        sched.add(holding_a_slot)
    running = make_seq("b")
    running.status = RequestStatus.RUNNING
    with pytest.raises(ValueError, match="not a new waiting sequence"):
        sched.add(running)


def test_finishing_a_sequence_that_does_not_hold_its_slot_frees_nothing() -> None:
    """``finish`` frees a slot only for the sequence running in it: a sequence naming a slot
    another now holds (a stale reference) leaves that one running."""
    sched = Scheduler(limits(max_slots=1))
    first, second = make_seq("first"), make_seq("second")
    sched.add(first)
    run_prefill(sched.schedule())
    first.status = RequestStatus.FINISHED_EOS
    sched.finish(first)
    assert first.slot is None
    sched.add(second)
    run_prefill(sched.schedule())
    assert second.slot == 0
    first.slot = 0  # stale: names the slot `second` now holds
    sched.finish(first)
    assert sched.num_running == 1 and sched.schedule().decode == [second]


def test_chunked_prefill_fills_the_budget_exactly_in_fifo_order() -> None:
    sched = Scheduler(chunking(), max_prefill_tokens=16, chunked=True, policy="fcfs")
    a, b, c = make_seq("a", prompt_len=20), make_seq("b", prompt_len=10), make_seq("c", prompt_len=5)
    for seq in (a, b, c):
        sched.add(seq)
    ends = []
    for _ in range(3):
        out = sched.schedule()
        ends.append([(s.request_id, s.prefilled, s.prefill_end) for s in out.prefill])
        decoded = [s.request_id for s in out.decode]
        run_prefill(out)
    assert ends == [[("a", 0, 16)],  # a chunk of a, the whole budget
                    [("a", 16, 20), ("b", 0, 10), ("c", 0, 2)],  # a's rest first, then b, then what is left for c
                    [("c", 2, 5)]]
    assert decoded == ["a", "b"]  # a and b got their first tokens in step 2; c in step 3
    assert c.output_ids and len(a.output_ids) == 2


def test_a_continued_chunk_comes_before_new_prompts_and_the_list_stays_in_slot_order() -> None:
    sched = Scheduler(chunking(), max_prefill_tokens=8, chunked=True)
    short, long, late = make_seq("short", prompt_len=2), make_seq("long", prompt_len=28), make_seq("late", 3)
    sched.add(short)
    sched.add(long)
    run_prefill(sched.schedule())  # short whole (slot 0), long's first 6 (slot 1)
    short.status = RequestStatus.FINISHED_STOP_SEQUENCE
    sched.finish(short)  # slot 0 is free again
    sched.add(late)
    out = sched.schedule()
    assert [(s.request_id, s.slot, s.prefilled, s.prefill_end) for s in out.prefill] == [("long", 1, 6, 14)]
    run_prefill(out)
    run_prefill(sched.schedule())  # long's 14..22
    out = sched.schedule()  # long's last 6 tokens, then 2 of late's in slot 0, listed first
    assert [(s.request_id, s.slot, s.prefill_end) for s in out.prefill] == [("late", 0, 2), ("long", 1, 28)]


def test_a_chunk_starts_after_the_cached_prefix_and_is_charged_only_what_it_computes() -> None:
    sched = Scheduler(chunking(), max_prefill_tokens=16, cached_tokens=lambda seq: 8, chunked=True)
    a, b = make_seq("a", prompt_len=20), make_seq("b", prompt_len=20)
    sched.add(a)
    sched.add(b)
    out = sched.schedule()
    assert [(s.request_id, s.prefill_end) for s in out.prefill] == [("a", 20), ("b", 12)]  # 12 + 4 computed


def test_chunked_prefill_needs_a_backend_that_continues_prompts() -> None:
    with pytest.raises(ValueError, match="can_chunk_prefill"):
        Scheduler(limits(), chunked=True)


# -- shortest_prompt_first ----------------------------------------------------------------------


def chunk_ends(sched: Scheduler, steps: int) -> list[list[tuple[str, int, int]]]:
    """Run ``steps`` steps; each step's prefill list as (request id, chunk start, chunk end)."""
    ends = []
    for _ in range(steps):
        out = sched.schedule()
        ends.append([(s.request_id, s.prefilled, s.prefill_end) for s in out.prefill])
        run_prefill(out)
    return ends


def admitted(sched: Scheduler) -> list[str]:
    """Request ids in the order the next step admitted them (slots go lowest first)."""
    new = [s for s in sched.schedule().prefill if s.prefilled == 0]
    return [s.request_id for s in sorted(new, key=lambda s: s.slot)]


def test_a_burst_is_admitted_shortest_prompt_first_and_equals_in_arrival_order() -> None:
    sched = Scheduler(replace(limits(max_slots=8), padded_prefill=False), max_prefill_tokens=512)
    assert sched.policy == "shortest_prompt_first"  # the default
    for rid, length in (("a", 30), ("b", 5), ("c", 20), ("d", 5), ("e", 12)):
        sched.add(make_seq(rid, length))
    assert admitted(sched) == ["b", "d", "e", "c", "a"]


def test_fcfs_admits_the_same_burst_in_arrival_order() -> None:
    sched = Scheduler(replace(limits(max_slots=8), padded_prefill=False), max_prefill_tokens=512, policy="fcfs")
    for rid, length in (("a", 30), ("b", 5), ("c", 20), ("d", 5), ("e", 12)):
        sched.add(make_seq(rid, length))
    assert admitted(sched) == ["a", "b", "c", "d", "e"]


def test_chunked_prefill_gives_the_budget_to_the_shortest_prompts_first() -> None:
    sched = Scheduler(chunking(), max_prefill_tokens=16, chunked=True)
    a, b, c = make_seq("a", prompt_len=20), make_seq("b", prompt_len=10), make_seq("c", prompt_len=5)
    for seq in (a, b, c):
        sched.add(seq)
    ends = chunk_ends(sched, 3)
    # c and b whole in step 1 (their first tokens a step sooner than in arrival order), then a.
    # (The list is in slot order: c was admitted first, into slot 0.)
    assert ends == [[("c", 0, 5), ("b", 0, 10), ("a", 0, 1)], [("a", 1, 17)], [("a", 17, 20)]]


def test_the_first_request_of_a_step_is_admitted_whatever_its_cost() -> None:
    sched = Scheduler(limits(max_slots=2), max_prefill_tokens=1)
    sched.add(make_seq("big", 30))
    sched.add(make_seq("small", 2))
    assert admitted(sched) == ["small"]  # over the budget alone; nothing more this step


def test_no_request_is_overtaken_more_than_max_slots_times() -> None:
    # One slot: each step admits one request. A long prompt is overtaken by max_slots (1) shorter
    # ones that arrived after it, then goes next however many short ones wait.
    sched = Scheduler(replace(limits(max_slots=1), padded_prefill=False), max_prefill_tokens=512)
    long = make_seq("long", 30)
    sched.add(long)
    order = []
    for i in range(4):
        sched.add(make_seq(f"short{i}", 3))
        out = sched.schedule()
        order += [s.request_id for s in out.prefill]
        for seq in out.prefill:
            seq.status = RequestStatus.FINISHED_LENGTH
            sched.finish(seq)
    assert order == ["short0", "long", "short1", "short2"]
    # With four slots the same long prompt waits for at most four later ones.
    sched = Scheduler(replace(limits(max_slots=4), padded_prefill=False), max_prefill_tokens=3)
    sched.add(make_seq("long", 30))
    for i in range(8):
        sched.add(make_seq(f"short{i}", 3))
    order = []
    while sched.num_waiting:
        out = sched.schedule()
        order += [s.request_id for s in out.prefill]
        for seq in out.prefill:
            seq.status = RequestStatus.FINISHED_LENGTH
            sched.finish(seq)
    assert order == ["short0", "short1", "short2", "short3", "long", "short4", "short5", "short6", "short7"]


def test_an_earlier_request_is_overtaken_at_least_as_often_as_a_later_one() -> None:
    sched = Scheduler(replace(limits(max_slots=8, n_positions=128, buckets=(64,)), padded_prefill=False),
                      max_prefill_tokens=4)
    seqs = [make_seq(rid, length) for rid, length in (("a", 40), ("b", 30), ("c", 2), ("d", 20), ("e", 1))]
    for seq in seqs:
        sched.add(seq)
    assert admitted(sched) == ["e", "c"]  # then d's 20 tokens are over what is left of 4
    assert [s.overtaken for s in seqs if s.slot is None] == [2, 2, 1]  # a, b, d
    counts = [s.overtaken for s in sched.waiting]
    assert counts == sorted(counts, reverse=True)


def test_the_prefix_cache_at_arrival_decides_the_order_and_at_admission_the_charge() -> None:
    held = {"long_cached": 28}  # 30 tokens, 28 of them in the cache: 2 to compute
    sched = Scheduler(chunking(max_slots=8), max_prefill_tokens=512, chunked=True,
                      cached_tokens=lambda seq: held.get(seq.request_id, 0))
    for rid, length in (("plain", 10), ("long_cached", 30), ("short", 4)):
        sched.add(make_seq(rid, length))
    held.clear()  # evicted after arrival: still first, but charged (and chunked from) all 30 tokens
    out = sched.schedule()
    assert [s.request_id for s in sorted(out.prefill, key=lambda s: s.slot)] == ["long_cached", "short", "plain"]
    assert [(s.request_id, s.prefill_end) for s in out.prefill][0] == ("long_cached", 30)


def test_on_a_bucketed_backend_prompts_in_one_bucket_keep_their_arrival_order() -> None:
    # Buckets 16/32: 10 and 4 tokens both cost 16, so the 4-token prompt does not overtake the
    # 10-token one (and spend its allowance for nothing); both overtake the 20-token prompt (32).
    sched = Scheduler(limits(max_slots=8), max_prefill_tokens=512)
    for rid, length in (("twenty", 20), ("ten", 10), ("four", 4)):
        sched.add(make_seq(rid, length))
    assert admitted(sched) == ["ten", "four", "twenty"]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_a_random_load_never_overtakes_a_request_more_than_max_slots_times(chunked: bool, seed: int) -> None:
    """Random arrivals, prompt lengths, finishes and aborts of waiting requests: every request is
    admitted in the end, and counted from the admission order itself, no request is overtaken by
    more than max_slots later arrivals; the oldest waiting request is always the most overtaken."""
    import random

    rng = random.Random(seed)
    max_slots = rng.choice([1, 2, 4])
    base = replace(limits(max_slots=max_slots, n_positions=128, buckets=(64,)), padded_prefill=False,
                   can_chunk_prefill=chunked)
    sched = Scheduler(base, max_prefill_tokens=rng.choice([8, 32, 64]), chunked=chunked)
    arrival: dict[str, int] = {}
    admitted_order: list[str] = []
    aborted: set[str] = set()
    for step in range(5000):
        if step >= 300 and not sched.has_unfinished():
            break
        for _ in range(rng.choice([0, 0, 1, 2, 3]) if step < 300 else 0):
            rid = f"r{len(arrival)}"
            arrival[rid] = len(arrival)
            sched.add(make_seq(rid, rng.randint(1, 60)))
        if sched.waiting and rng.random() < 0.05:  # a client goes away while its request waits
            gone = rng.choice(list(sched.waiting))
            gone.status = RequestStatus.FINISHED_ABORTED
            sched.finish(gone)
            aborted.add(gone.request_id)
        counts = [s.overtaken for s in sched.waiting]
        assert counts == sorted(counts, reverse=True)
        assert all(count <= max_slots for count in counts)
        out = sched.schedule()
        admitted_order += [s.request_id for s in out.prefill if s.prefilled == 0 and s.request_id not in admitted_order]
        run_prefill(out)
        for seq in list(sched.running.values()):
            if seq.prefill_done and rng.random() < 0.5:
                seq.status = RequestStatus.FINISHED_LENGTH
                sched.finish(seq)
    assert not sched.waiting
    assert sorted(admitted_order + sorted(aborted), key=arrival.get) == sorted(arrival, key=arrival.get)
    for position, rid in enumerate(admitted_order):
        overtakers = [other for other in admitted_order[:position] if arrival[other] > arrival[rid]]
        assert len(overtakers) <= max_slots, (rid, overtakers)


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="fcfs, shortest_prompt_first"):
        Scheduler(limits(), policy="lifo")  # type: ignore[arg-type]


def test_a_bucket_boundary_orders_by_the_padded_cost() -> None:
    # Buckets 16/32: 17 tokens cost 32 and 16 tokens cost 16, so the later 16-token prompt goes first.
    sched = Scheduler(limits(max_slots=8), max_prefill_tokens=512)
    sched.add(make_seq("seventeen", 17))
    sched.add(make_seq("sixteen", 16))
    assert admitted(sched) == ["sixteen", "seventeen"]


def test_without_chunking_a_cached_prefix_is_not_charged() -> None:
    # Packed, budget 20: two 30-token prompts with 20 tokens cached cost 10 each, so both fit.
    sched = Scheduler(replace(limits(max_slots=8, n_positions=128, buckets=(64,)), padded_prefill=False),
                      max_prefill_tokens=20, cached_tokens=lambda seq: 20, policy="fcfs")
    sched.add(make_seq("a", 30))
    sched.add(make_seq("b", 30))
    sched.add(make_seq("c", 30))
    assert admitted(sched) == ["a", "b"]  # c's 10 would pass what is left (0)


def test_a_budget_of_one_token_still_continues_a_prompt_and_a_chunk_takes_the_one_prefill_slot() -> None:
    # Filling the budget exactly leaves at most one prompt part-way, which the next step continues.
    sched = Scheduler(chunking(), max_prefill_tokens=1, chunked=True)
    a = make_seq("a", 3)
    sched.add(a)
    assert chunk_ends(sched, 3) == [[("a", 0, 1)], [("a", 1, 2)], [("a", 2, 3)]] and a.output_ids
    # One prefill a step: after b's chunk, nothing new is admitted though budget is left.
    sched = Scheduler(replace(chunking(max_slots=4), max_prefill_slots=1), max_prefill_tokens=8, chunked=True,
                      policy="fcfs")
    a, b = make_seq("a", 3), make_seq("b", 20)
    sched.add(b)
    run_prefill(sched.schedule())  # b's first 8
    sched.add(a)
    out = sched.schedule()
    assert [(s.request_id, s.prefilled, s.prefill_end) for s in out.prefill] == [("b", 8, 16)]
