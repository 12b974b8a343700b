"""``python -m djl_python.worker``: the DJL engine loop without DJL's engine-cache launcher.

Same loop, arguments and behaviour as the launcher ``djl-engine-install``
writes (see ``djl_python.djl.launcher``). The DJL release whose protocol it
speaks is ``$DJL_PYTHON_DJL_VERSION`` (default 0.28.0); ``DJL_PYTHON_WIRE``
(``int16``/``int32``) overrides the string framing alone.
"""

from __future__ import annotations

import sys
from typing import Optional

from djl_python.djl.launcher import ACCEPT_TIMEOUT_S, DEFAULT_ENTRY_POINT, STARTED_MARKER, invoke, parse_args
from djl_python.djl.launcher import main as _engine_main

__all__ = ["ACCEPT_TIMEOUT_S", "DEFAULT_ENTRY_POINT", "STARTED_MARKER", "invoke", "main", "parse_args"]


def main(argv: Optional[list[str]] = None) -> int:
    return _engine_main(argv, prog="djl_python.worker")


if __name__ == "__main__":
    sys.exit(main())
