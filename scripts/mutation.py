"""A bounded mutation run over the engine's scheduler, stopping and sampling and the C kernels.

Each mutant changes one token of one file (an operator, a constant, a ``break``, a
``.clone()``, an intrinsic); the tests that cover that file then run against it. A mutant
is *killed* when they fail, crash or time out, *survives* when they pass, and is
*stillborn* (not counted) when it does not compile. The score is killed / (killed +
survived). Survivors are listed with their place and change: each must be killed by a new
test or explained as equivalent in docs/testing.md.

Why our own runner and not mutmut or cosmic-ray: they mutate Python only, and half of what
this run must reach is C. It stays small: the mutants are single-token edits chosen from a
fixed list of operators, in a fixed order, and the run is bounded (``--budget-s``).

How it runs, within its budget on 2 cores:

* the repository's ``djl_python``, ``tests`` and ``scripts`` are copied to one scratch folder
  per worker (``--jobs``, one per core), where the mutants are written (the working tree is
  never touched);
* one parent process imports torch, transformers and pytest once, and forks a child per
  mutant that imports the (mutated) package from its scratch copy and runs pytest there,
  without bytecode and without the installed pytest plugins other than pytest-timeout;
* a C mutant is checked with ``cc -fsyntax-only`` first, then its kernel tests run in a
  child with a scratch kernel cache; a C mutant that survives them runs again, in a fresh
  process, against the AddressSanitizer + UBSan build (``scripts/sanitized-kernels.sh``),
  which kills out-of-bounds reads that leave every value right.

    python scripts/mutation.py                 # the whole run (make mutation)
    python scripts/mutation.py --list          # the mutants, without running them
    python scripts/mutation.py --only stopping # one target
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# target name: (file, the pytest arguments that run against its mutants)
# The engine's unit tests, then the engine on a scripted backend (no model).
ENGINE = "tests/engine/test_engine.py"
TARGETS = {
    # (Its import test starts a fresh interpreter; no mutant here touches an import.)
    "scheduler": ("djl_python/engine/scheduler.py",
                  ("tests/engine/test_scheduler.py", ENGINE, "-k", "not does_not_import_torch")),
    "stopping": ("djl_python/engine/stopping.py", ("tests/engine/test_stopping.py", ENGINE)),
    "sampling": ("djl_python/engine/sampling.py",
                 ("tests/engine/test_sampling.py", "tests/engine/test_vllm_fields.py", ENGINE)),
    # The build, cache and planted-sanitizer tests check the build, not what a kernel computes.
    "kernels": ("djl_python/backends/pytorch/native/cpu_kernels.c",
                ("tests/backends/test_cpu_kernels.py", "-k", "not planted and not cached and not broken_source")),
}

# Python: token -> replacements (one mutant each).
PY_OPS = {
    "<": ["<="], "<=": ["<"], ">": [">="], ">=": [">"], "==": ["!="], "!=": ["=="],
    "+": ["-"], "-": ["+"], "*": ["/"], "/": ["*"], "//": ["*"], "%": ["//"],
    "+=": ["-="], "-=": ["+="],
}
PY_NAMES = {"and": ["or"], "or": ["and"], "True": ["False"], "False": ["True"], "break": ["pass"],
            "continue": ["pass"], "min": ["max"], "max": ["min"]}
# C: regex -> replacement, applied at one match at a time (comments and preprocessor lines skipped).
C_RULES = [
    (r"(?<![<>=!])<(?![<=])", "<="), (r"<=", "<"), (r"(?<![->=!])>(?![>=])", ">="), (r">=", ">"),
    (r"==", "!="), (r"!=", "=="),
    (r"(?<=\s)-(?=\s)", "+"),
    (r"\+=", "-="),
    (r"_mm256_max_ps", "_mm256_min_ps"), (r"_mm256_min_ps", "_mm256_max_ps"),
    (r"_mm256_sub_ps", "_mm256_add_ps"), (r"_mm256_add_ps", "_mm256_sub_ps"),
    (r"_mm256_fmadd_ps", "_mm256_fmsub_ps"),
    (r"\b([018])\b(?![.\w])", None),  # the constants 0, 1 and 8 (a vector's width) -> n + 1
    (r"\bbreak;", "/* break */;"), (r"\bcontinue;", "/* continue */;"),
]
# The softmax's shift by the maximum, dropped (a mutant a value test must kill).
C_DROP_SUBTRAHEND = (r"_mm256_sub_ps\(([^,()]+\([^()]*\)), m8\)", r"\1")


@dataclass
class Mutant:
    target: str
    line: int
    column: int
    original: str
    replacement: str
    source: str  # the whole mutated file

    def label(self) -> str:
        return f"{TARGETS[self.target][0]}:{self.line}:{self.column}: {self.original!r} -> {self.replacement!r}"


def _skip_python_line(line: str) -> bool:
    stripped = line.strip()
    return (stripped.startswith(("import ", "from ", "logger.", "@", "def ", "class ", "raise "))
            or "TYPE_CHECKING" in stripped)


def python_mutants(target: str, text: str) -> list[Mutant]:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    out: list[Mutant] = []
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    for i, tok in enumerate(tokens):
        row, col = tok.start
        if row > len(lines):
            break  # ENDMARKER
        if _skip_python_line(line):
            continue
        start = offsets[row - 1] + col
        end = offsets[tok.end[0] - 1] + tok.end[1]
        replacements: list[str] = []
        if tok.type == tokenize.OP and tok.string in PY_OPS:
            if tok.string == "-" and line[:col].rstrip().endswith("->"):
                continue
            if (tok.string == "-" and tokens[i + 1].string == "1" and i > 0
                    and tokens[i - 1].string in ("(", ",", "=", "[")):
                continue  # the last dimension, -1: +1 is the same one on the 2-D tensors here
            replacements = PY_OPS[tok.string]
        elif tok.type == tokenize.NAME and tok.string in PY_NAMES:
            replacements = PY_NAMES[tok.string]
        elif tok.type == tokenize.NUMBER and re.fullmatch(r"\d+", tok.string):
            replacements = [str(int(tok.string) + 1)]
        elif tok.type == tokenize.NUMBER and re.fullmatch(r"\d*\.\d+(e-?\d+)?", tok.string):
            replacements = [repr(float(tok.string) * 2) if float(tok.string) else "1.0"]
        for new in replacements:
            out.append(Mutant(target, row, col + 1, tok.string, new, text[:start] + new + text[end:]))
    for match in re.finditer(r"\.clone\(\)", text):  # a copy dropped: the caller's tensor is changed in place
        row, col = _row_col(text, match.start())
        out.append(Mutant(target, row, col, ".clone()", "", text[: match.start()] + text[match.end():]))
    return [m for m in out if _compiles(m.source)]


def _row_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    row = text.count("\n", 0, offset) + 1
    return row, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _compiles(source: str) -> bool:
    try:
        compile(source, "<mutant>", "exec")
    except SyntaxError:
        return False
    return True


def _c_code_only(text: str) -> str:
    """``text`` with comments and preprocessor lines blanked (same length, same offsets)."""
    masked = re.sub(r"/\*.*?\*/", lambda m: " " * len(m.group()), text, flags=re.S)
    masked = re.sub(r"//[^\n]*", lambda m: " " * len(m.group()), masked)
    masked = re.sub(r"^\s*#[^\n]*(\\\n[^\n]*)*", lambda m: " " * len(m.group()), masked, flags=re.M)
    return masked


def c_mutants(target: str, text: str) -> list[Mutant]:
    masked = _c_code_only(text)
    out: list[Mutant] = []
    seen: set[tuple[int, int, str]] = set()
    for pattern, replacement in C_RULES:
        for match in re.finditer(pattern, masked):
            start, end = match.span()
            new = str(int(match.group(1)) + 1) if replacement is None else replacement
            if (start, end, new) in seen:
                continue
            seen.add((start, end, new))
            row, col = _row_col(text, start)
            out.append(Mutant(target, row, col, text[start:end], new, text[:start] + new + text[end:]))
    for match in re.finditer(C_DROP_SUBTRAHEND[0], masked):
        start, end = match.span()
        new = re.sub(C_DROP_SUBTRAHEND[0], C_DROP_SUBTRAHEND[1], text[start:end])
        row, col = _row_col(text, start)
        out.append(Mutant(target, row, col, text[start:end], new, text[:start] + new + text[end:]))
    return out


def mutants_of(target: str) -> list[Mutant]:
    path = ROOT / TARGETS[target][0]
    text = path.read_text()
    return c_mutants(target, text) if path.suffix == ".c" else python_mutants(target, text)


def _c_compiles(source: str, scratch: Path) -> bool:
    from_file = scratch / "syntax_check.c"
    from_file.write_text(source)
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    result = subprocess.run([cc, "-fsyntax-only", "-march=native", "-fopenmp", "-Werror=implicit-function-declaration",
                             str(from_file)], capture_output=True, text=True)
    return result.returncode == 0


def _fork_pytest(copy: Path, args: tuple[str, ...], env: dict[str, str]) -> int:
    """Fork a child that runs pytest with ``args`` in the scratch ``copy``; its pid."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: import the (mutated) package from its copy, run, exit
        # No bytecode: a mutant of the same size written within the same second as the last
        # would otherwise be served from the last one's .pyc (its mtime and size match).
        sys.dont_write_bytecode = True
        os.chdir(copy)
        sys.path[0] = str(copy)
        os.environ.update(env | {"PYTHONPATH": str(copy)})
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pytest
        import torch

        torch.set_num_threads(1)  # one child per core
        # Installed plugins (hypothesis, schemathesis, anyio) cost seconds per start and serve
        # none of these tests; pytest-timeout (the ini's `timeout`) is loaded by name.
        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "pytest_timeout", *args])
    except BaseException:  # noqa: BLE001 - any failure of the child kills the mutant
        code = 99
    os._exit(int(code))


@dataclass
class _Job:
    """One mutant on one scratch copy: the pytest child, then (C survivors) the sanitized run."""

    mutant: Mutant
    copy: Path
    deadline: float
    pid: int | None = None
    sanitized: subprocess.Popen | None = None

    def restore(self) -> None:
        path = self.copy / TARGETS[self.mutant.target][0]
        path.write_text((ROOT / TARGETS[self.mutant.target][0]).read_text())


def _poll(job: _Job, env: dict[str, str], timeout_s: float) -> str | None:
    """The job's outcome once known (starting its sanitized run when needed), else None."""
    if job.sanitized is not None:
        code = job.sanitized.poll()
        if code is None and time.monotonic() < job.deadline:
            return None
        if code is None:
            job.sanitized.kill()
            job.sanitized.wait()
        return "survived" if code == 0 else "killed"
    assert job.pid is not None
    done, status = os.waitpid(job.pid, os.WNOHANG)
    if not done:
        if time.monotonic() < job.deadline:
            return None
        os.kill(job.pid, signal.SIGKILL)
        os.waitpid(job.pid, 0)
        return "killed"  # a mutant that hangs the tests is caught by their timeout
    if os.waitstatus_to_exitcode(status) != 0:
        return "killed"
    if TARGETS[job.mutant.target][0].endswith(".c"):  # survived the value tests: the sanitizer's turn
        job.sanitized = subprocess.Popen(
            ["bash", "scripts/sanitized-kernels.sh", "-x", "-k", "not planted and not cached and not broken_source"],
            cwd=job.copy, env=os.environ | env | {"PY": sys.executable, "PYTHONPATH": str(job.copy)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        job.deadline = time.monotonic() + timeout_s * 2
        return None
    return "survived"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="targets to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--budget-s", type=float, default=840.0, help="stop starting mutants after this long")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="a mutant's tests past this are a kill")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants run at once")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    targets = args.only or list(TARGETS)
    mutants = [m for t in targets for m in mutants_of(t)]
    if args.list:
        for m in mutants:
            print(m.label())
        print(f"{len(mutants)} mutants")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="djl-mutation-"))
    try:
        copies = [scratch / f"copy{i}" for i in range(max(1, args.jobs))]
        for copy in copies:
            for folder in ("djl_python", "tests", "scripts"):
                shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        sys.path.insert(0, str(copies[0]))
        # Third-party imports once here, shared by every forked child (never djl_python: the
        # children must import the mutated copy).
        import pytest  # noqa: F401
        import pytest_timeout  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

        env = {"DJL_CACHE_DIR": str(scratch / "kernel-cache"), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
               "DJL_TEST_TINY_MODELS_DIR": str(scratch / "tiny-models")}
        started = time.monotonic()
        for target in targets:  # the unmutated tests must pass, or every mutant would count as killed
            pid = _fork_pytest(copies[0], TARGETS[target][1], env)
            if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
                print(f"baseline: the tests of {target} fail without any mutant", file=sys.stderr)
                return 2
        results: dict[str, list[dict]] = {t: [] for t in targets}
        pending = list(reversed(mutants))
        free, running = list(copies), []
        not_run = 0
        while pending or running:
            while pending and free:
                if time.monotonic() - started > args.budget_s:
                    not_run = len(pending)
                    print(f"budget of {args.budget_s:.0f} s spent: {not_run} mutants not run", file=sys.stderr)
                    pending = []
                    break
                m, copy = pending.pop(), free.pop()
                if m.target == "kernels" and not _c_compiles(m.source, copy):
                    results[m.target].append({"line": m.line, "column": m.column, "from": m.original,
                                              "to": m.replacement, "outcome": "stillborn"})
                    free.append(copy)
                    continue
                (copy / TARGETS[m.target][0]).write_text(m.source)
                job = _Job(m, copy, time.monotonic() + args.timeout_s)
                job.pid = _fork_pytest(copy, TARGETS[m.target][1], env)
                running.append(job)
            for job in list(running):
                outcome = _poll(job, env, args.timeout_s)
                if outcome is None:
                    continue
                running.remove(job)
                job.restore()
                free.append(job.copy)
                m = job.mutant
                results[m.target].append({"line": m.line, "column": m.column, "from": m.original,
                                          "to": m.replacement, "outcome": outcome})
                if outcome == "survived":
                    print(f"SURVIVED {m.label()}", flush=True)
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        print(f"\nmutation run: {elapsed:.0f} s, {len(mutants)} mutants, {not_run} not run, {args.jobs} at once")
        print(f"{'target':<10} {'killed':>7} {'survived':>9} {'stillborn':>10} {'score':>7}")
        total_killed = total_survived = 0
        for target, rows in results.items():
            killed = sum(r["outcome"] == "killed" for r in rows)
            survived = sum(r["outcome"] == "survived" for r in rows)
            stillborn = sum(r["outcome"] == "stillborn" for r in rows)
            total_killed += killed
            total_survived += survived
            score = killed / (killed + survived) if killed + survived else float("nan")
            print(f"{target:<10} {killed:>7} {survived:>9} {stillborn:>10} {score:>7.1%}")
        total = total_killed / (total_killed + total_survived) if total_killed + total_survived else float("nan")
        print(f"{'all':<10} {total_killed:>7} {total_survived:>9} {'':>10} {total:>7.1%}")
        if args.report:
            args.report.write_text(json.dumps({"elapsed_s": round(elapsed), "not_run": not_run, "results": results},
                                              indent=1))
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
