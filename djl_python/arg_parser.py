"""``ArgParser.python_engine_args()``: the command line DJL's Java front end passes to its engine script.

Kept where DJL has it (``djl_python/arg_parser.py``) so DJL's own
``djl_python_engine.py`` can import it; this package's launcher uses
``djl_python.djl.launcher.parse_args``, which accepts the same arguments plus
later releases' ones.
"""

from __future__ import annotations

import argparse


class ArgParser:
    @staticmethod
    def python_engine_args() -> argparse.ArgumentParser:
        from djl_python.djl.launcher import build_parser

        return build_parser()
