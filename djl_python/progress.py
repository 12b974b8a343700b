"""Progress bars only where a person watches them.

transformers and huggingface_hub draw tqdm bars (loading weights, downloading, converting) on
stderr. On a terminal they redraw in place; in a log file, a container's log stream or DJL's
captured worker output, each redraw is a carriage return inside one ever-growing line. Every
entry point (``djl-serve``, the DJL worker, ``djl-partition``, the default-model preparation)
calls :func:`progress_bars_for` once, at start, with the stream its logs go to.
"""

from __future__ import annotations

from typing import TextIO


def progress_bars_for(stream: TextIO) -> bool:
    """Turn the Hugging Face progress bars off unless ``stream`` is a terminal; whether they stay on."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # a closed or stream-like object without a file behind it
        interactive = False
    if interactive:
        return True
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    return False
