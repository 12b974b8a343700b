"""At the end of the run, name the DJL releases whose Java side ran (``RealDjl`` records them)."""

from __future__ import annotations

from tests.djl_real import djl_real


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if djl_real.STARTED:
        terminalreporter.write_line("DJL's published Java front end (ai.djl.python:python) ran at: "
                                    + ", ".join(sorted(djl_real.STARTED)))
