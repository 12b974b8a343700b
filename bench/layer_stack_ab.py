"""The layer stack against the Python layer loop, in whole forward steps on one copy of the weights.

``python -m bench.layer_stack_ab`` loads each model once on the PyTorch backend and times, step by
step, the two ways its native forward can run the decoder layers: as one call into the CPU kernels
(``native/layer_stack.py``) and by the Python loop over the same kernels
(:meth:`~djl_python.backends.pytorch.native.decoder.NativeDecoder.use_stack`). One backend serves both,
so both read the same weights from the same memory (two loaded copies differ by where each was
placed), and the two ways alternate step by step, the order flipping every round, so both see the
same state of a shared machine. Both decode the same tokens at the same positions (the second
rewrites the columns the first wrote, with the same values: the two compute the same bits).

Cases: decode steps of ``B`` rows at context 256 and a prefill of two 256-token prompts, on
SmolLM2-135M (the default model) in fp32 and bf16 and the 1B-class bench model (Llama-3.2-1B
shape, random weights; ``bench/large_model.py``) in fp32. Reported per case: the median of each,
in ms, and stack over loop (below 1: the stack is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

CONTEXT = 256


def _alternate(step: Callable[[bool], None], use: Callable[[bool], None], rounds: int) -> dict[bool, float]:
    samples: dict[bool, list[float]] = {True: [], False: []}
    for stacked in (True, False):  # warm-up
        use(stacked)
        step(stacked)
    for i in range(rounds):
        for stacked in ((True, False) if i % 2 else (False, True)):
            use(stacked)
            start = time.perf_counter()
            step(stacked)
            samples[stacked].append(time.perf_counter() - start)
    return {stacked: statistics.median(s) * 1000 for stacked, s in samples.items()}


def _row(what: str, ms: dict[bool, float]) -> dict[str, Any]:
    return {"what": what, "stack_ms": round(ms[True], 2), "loop_ms": round(ms[False], 2),
            "stack_over_loop": round(ms[True] / ms[False], 3)}


def run_case(folder: Path, dtype: str, batches: tuple[int, ...], rounds: int,
             log: Callable[[str], None]) -> list[dict[str, Any]]:
    import torch

    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.backends.pytorch.native.decoder import NativeDecoder

    backend = PyTorchBackend.load(folder, max_slots=max(batches), dtype=dtype, n_positions=CONTEXT + 2 * rounds + 64)
    forward = backend._forward  # the backend's own forward: the A/B needs its switch
    if not isinstance(forward, NativeDecoder) or forward.stack != "one call":
        raise SystemExit(f"no layer stack here for {folder.name} {dtype}: {backend.info.extra.get('layer_stack')}")
    results = []
    with torch.inference_mode():
        prompts = [[1000 + (7 * s + i) % 20000 for i in range(CONTEXT)] for s in range(max(batches))]
        for batch in batches:
            slots = list(range(batch))
            backend.prefill(slots, prompts[:batch])
            calls = [0]

            def decode(stacked: bool) -> None:  # the two calls of a round decode at one position
                backend.decode(slots, [1234] * batch, [CONTEXT + calls[0] // 2] * batch)
                calls[0] += 1

            ms = _alternate(decode, forward.use_stack, rounds)
            for slot in slots:
                backend.release(slot)
            results.append(_row(f"decode, {batch} rows", ms))
            log(f"  {folder.name} {dtype} {results[-1]}")
        pair = [0, 1]

        def prefill(stacked: bool) -> None:
            backend.prefill(pair, prompts[:2])
            for slot in pair:
                backend.release(slot)

        ms = _alternate(prefill, forward.use_stack, max(3, rounds // 8))
        results.append(_row("prefill, 2 x 256 tokens", ms))
        log(f"  {folder.name} {dtype} {results[-1]}")
    backend.close()
    return results


def run_layer_stack_ab(rounds: int, log: Callable[[str], None], large: bool = True) -> dict[str, Any]:
    import torch

    from bench import large_model
    from djl_python.default_model import default_model_dir

    smol = default_model_dir()
    cases: dict[str, Any] = {"threads": torch.get_num_threads(), "context": CONTEXT, "rounds": rounds}
    cases["SmolLM2-135M fp32"] = run_case(smol, "fp32", (1, 4, 16, 32), rounds, log)
    cases["SmolLM2-135M bf16"] = run_case(smol, "bf16", (1, 4, 16, 32), rounds, log)
    if large:
        cases["1B-class fp32"] = run_case(large_model.model_folder(log), "fp32", (1, 16), max(8, rounds // 4), log)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--no-large", action="store_true", help="skip the 1B-class model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "layer_stack_ab.json")
    args = parser.parse_args()
    result = run_layer_stack_ab(args.rounds, print, large=not args.no_large)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
