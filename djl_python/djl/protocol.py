"""What differs between the DJL Serving releases this package is driven by (0.26, 0.27, 0.28).

Read from djl-serving's sources at tags v0.26.0, v0.27.0 and v0.28.0:

* String framing: ``CodecUtils.readUtf8/writeUtf8`` (Java) and ``inputs.py``
  ``retrieve_utf8`` / ``outputs.py`` ``write_utf8`` (Python) use an ``int16``
  length in 0.26 and ``int32`` from 0.27 (commit 89a22be3).
* Rolling rule: ``PyPredictor`` rolls iff ``rolling_batch`` is set in 0.26;
  iff it is set and not ``disable`` from 0.27 (commit ab25cb3d), where a
  request carrying a ``handler`` property also bypasses the rolling loop.
* Rolling records: the TNX handler of 0.26/0.27 answers each request with a
  JSON record ``{"data", "last"}`` (``RollingBatch.Request.addResponse``'s
  ``json[0] == '{'`` branch); 0.28's answers with ``Output.binary_encode``.

* Empty last records: 0.29-0.31's ``RollingBatch`` drops a record with empty
  ``data`` and no ``code`` even when it is the last (v0.29.0
  ``RollingBatch.java:356-359``; 0.32 keeps it, djl-serving ed821e5e), see
  ``records``.

Later releases are otherwise treated as 0.28. The choice is process-wide and made once
by the engine launcher; ``DJL_PYTHON_WIRE`` (``int16``/``int32``) overrides
the string framing alone.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from djl_python import framing

logger = logging.getLogger(__name__)

DEFAULT_DJL_VERSION = "0.28.0"
SUPPORTED = ("0.26", "0.27", "0.28")
VERSION_ENV = "DJL_PYTHON_DJL_VERSION"
WIRE_ENV = "DJL_PYTHON_WIRE"
_WIRE_NAMES = {"int16": 2, "int32": 4}


@dataclass(frozen=True)
class DjlProtocol:
    """The behaviour of one DJL release's Java side, as far as this worker must match it."""

    version: str
    string_length_bytes: int  # 2 (int16) or 4 (int32)
    disable_means_plain: bool  # rolling_batch=disable turns the rolling loop off (>= 0.27)
    handler_property_means_plain: bool  # a request with a "handler" property skips the loop (>= 0.27)
    json_records: bool  # rolling replies as JSON {"data","last"} records (0.26, 0.27) instead of binary
    drops_empty_last_record: bool = False  # Java loses an empty last record (0.29-0.31)

    @property
    def wire_name(self) -> str:
        return "int16" if self.string_length_bytes == 2 else "int32"


def parse_version(text: str) -> tuple[int, int]:
    """``"0.28.0"`` (also ``0.28``, ``0.28.0-SNAPSHOT``) -> ``(0, 28)``; ``ValueError`` otherwise."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.\d+)?(?:[-+.][0-9A-Za-z.-]*)?\s*$", text or "")
    if not m:
        raise ValueError(f"not a DJL version: {text!r} (expected X.Y.Z, e.g. 0.28.0)")
    return int(m.group(1)), int(m.group(2))


def protocol_for(version: str, env: Optional[Mapping[str, str]] = None) -> DjlProtocol:
    """The protocol of DJL ``version``; ``env[DJL_PYTHON_WIRE]`` overrides the string framing."""
    env = os.environ if env is None else env
    major, minor = parse_version(version)
    if (major, minor) < (0, 26):
        logger.warning("DJL %s is older than any release this package was checked against (0.26-0.28); "
                       "speaking DJL 0.26's protocol", version)
    old = (major, minor) < (0, 27)
    before_binary = (major, minor) < (0, 28)
    width = 2 if old else 4
    wire = (env.get(WIRE_ENV) or "").strip().lower()
    if wire:
        if wire not in _WIRE_NAMES:
            raise ValueError(f"{WIRE_ENV}={wire!r}: expected int16 or int32")
        width = _WIRE_NAMES[wire]
    return DjlProtocol(version=version, string_length_bytes=width, disable_means_plain=not old,
                       handler_property_means_plain=not old, json_records=before_binary,
                       drops_empty_last_record=(0, 29) <= (major, minor) < (0, 32))


_current: Optional[DjlProtocol] = None


def activate(protocol: DjlProtocol) -> DjlProtocol:
    """Make ``protocol`` the process's protocol (framing included); returns it."""
    global _current
    framing.set_string_length_bytes(protocol.string_length_bytes)
    _current = protocol
    return protocol


def current() -> DjlProtocol:
    """The active protocol; before ``activate``: ``$DJL_PYTHON_DJL_VERSION`` or 0.28."""
    if _current is None:
        activate(protocol_for(os.environ.get(VERSION_ENV) or DEFAULT_DJL_VERSION))
    assert _current is not None
    return _current
