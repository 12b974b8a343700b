"""Low-concurrency latency: one sequence at a time, with and without n-gram speculation.

``python -m bench.latency`` loads SmolLM2 (fp32) in-process twice (``ngram_length`` 0 and
``--ngram``), then runs each workload alternately on both engines, ``--repeats`` times, greedy:

* ``repetitive``: rewrite a given piece of code with one name changed (the output repeats its
  input, where prompt lookup pays);
* ``free``: an open question (little to look up).

Reported per workload and engine: TTFT (``step()`` calls until the first token) and TPOT (the
rest of the output over its tokens), medians over the repeats, and the output's equality across
the two engines (greedy: it must be equal).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

CODE = '''def parse_records(lines, separator=","):
    """Parse each line into a record dictionary, skipping blank lines and comments."""
    records = []
    for number, line in enumerate(lines):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(separator)]
        if len(fields) < 3:
            raise ValueError(f"line {number}: expected 3 fields, got {len(fields)}")
        records.append({"name": fields[0], "city": fields[1], "score": int(fields[2])})
    return records
'''
WORKLOADS = {
    "repetitive": "Rewrite this Python function, renaming parse_records to read_records and changing nothing "
                  "else. Reply with the code only.\n\n" + CODE,
    "free": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}


def _one(engine: Any, prompt_ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    from djl_python.engine.request import SamplingParams

    rid = engine.add_request(prompt_ids, SamplingParams(max_new_tokens=max_new_tokens))
    start = time.perf_counter()
    first, tokens = None, []
    while engine.has_unfinished():
        for out in engine.step():
            if out.request_id == rid and out.token_ids:
                first = first if first is not None else time.perf_counter()
                tokens += out.token_ids
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("no token came out")
    return {"ttft_s": first - start, "tpot_s": (end - first) / max(len(tokens) - 1, 1), "tokens": tokens}


def run_latency(model_dir: Path, ngram: int, max_new_tokens: int, repeats: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.engine.engine import Engine

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    engines = {k: Engine(PyTorchBackend.load(model_dir, max_slots=1, dtype="fp32", n_positions=1024), tokenizer,
                         ngram_length=k) for k in (0, ngram)}
    result: dict[str, Any] = {"ngram_length": ngram, "max_new_tokens": max_new_tokens, "repeats": repeats,
                              "workloads": {}}
    for name, text in WORKLOADS.items():
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        runs: dict[int, list[dict[str, Any]]] = {k: [] for k in engines}
        _one(engines[0], ids, 4)  # warm-up
        _one(engines[ngram], ids, 4)
        for _ in range(repeats):
            for k, engine in engines.items():
                runs[k].append(_one(engine, ids, max_new_tokens))
        row: dict[str, Any] = {"prompt_tokens": len(ids)}
        for k, samples in runs.items():
            label = "plain" if k == 0 else f"ngram {k}"
            row[label] = {"ttft_ms": round(statistics.median(r["ttft_s"] for r in samples) * 1000, 1),
                          "tpot_ms": round(statistics.median(r["tpot_s"] for r in samples) * 1000, 2)}
        row["same_tokens"] = all(r["tokens"] == runs[0][0]["tokens"] for k in runs for r in runs[k])
        row["tpot_ratio"] = round(row[f"ngram {ngram}"]["tpot_ms"] / row["plain"]["tpot_ms"], 3)
        result["workloads"][name] = row
    return result


def main() -> None:
    from bench.__main__ import write_result
    from djl_python.default_model import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ngram", type=int, default=8, help="tokens one speculative step scores")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency.json")
    args = parser.parse_args()
    write_result(run_latency(default_model_dir(), args.ngram, args.max_new_tokens, args.repeats), args.out)

if __name__ == "__main__":
    main()
