"""The package's docstrings and comments state contracts, invariants and why: no issue numbers of
this project, no commit hashes of this repository, no measurements (those go to
docs/performance.md and git history, where they do not go stale).

Upstream citations stay: ``aws-neuron/transformers-neuronx#79`` names its repository, and a
hash such as ``8b01968`` is not a commit of this repository. Protocol and configuration values
(``SageMaker's 30 s``) are not measurements; the patterns below look for what a measurement
is written as: a speed, a duration in milliseconds, "measured", "N x faster".
"""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

import djl_python

ROOT = Path(djl_python.__file__).parent
REPO = ROOT.parent

ISSUE = re.compile(r"(?i)\bissues? #?\d+\b|(?<![\w/.-])#\d+\b")
MEASUREMENT = re.compile(
    r"(?i)\bmeasured\b|\d\s?(ms|µs)\b|\bGFLOP/s|\btok(ens)?/s\b|\d(\.\d+)?\s?(x|×)\s(faster|slower)"
    r"|\d\s?%\s(faster|slower)|\border of magnitude\b")
HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def prose(path: Path) -> list[tuple[int, str]]:
    """Comments and docstrings (a string that is a whole statement) of one module, with line numbers."""
    found: list[tuple[int, str]] = []
    source = path.read_text()
    previous = tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found.append((tok.start[0], tok.string))
        elif tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                                           tokenize.NL):
            found.append((tok.start[0], tok.string))
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type
    return found


MODULES = sorted(ROOT.rglob("*.py"))


def our_commits(candidates: set[str]) -> set[str]:
    """The candidates that name a commit of this repository."""
    if not candidates or not (REPO / ".git").exists():
        return set()
    ours = set()
    for candidate in sorted(candidates):
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--quiet", "--verify", f"{candidate}^{{commit}}"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            ours.add(candidate)
    return ours


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers_or_measurements(path: Path) -> None:
    bad = [(line, m.group(0)) for line, text in prose(path) for pattern in (ISSUE, MEASUREMENT)
           for m in pattern.finditer(text)]
    assert not bad, f"{path.relative_to(REPO)}: {bad}"


def test_no_commit_hashes_of_this_repository() -> None:
    where: dict[str, list[str]] = {}
    for path in MODULES:
        for line, text in prose(path):
            for candidate in HEX.findall(text):
                where.setdefault(candidate, []).append(f"{path.relative_to(REPO)}:{line}")
    ours = our_commits(set(where))
    assert not ours, {h: where[h] for h in ours}


def test_the_patterns_catch_what_they_must() -> None:
    assert ISSUE.search("see issue 13 item 1") and ISSUE.search("(#42)")
    assert not ISSUE.search("aws-neuron/transformers-neuronx#79")
    assert MEASUREMENT.search("takes 12 ms per step") and MEASUREMENT.search("4-6x slower")
    assert MEASUREMENT.search("measured on an EPYC") and MEASUREMENT.search("2.5 GFLOP/s")
    assert not MEASUREMENT.search("within SageMaker's 30 s")
    assert HEX.findall("8b01968 base.py:425") == ["8b01968"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert our_commits({head, "8b01968"}) == {head}
