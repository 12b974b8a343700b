"""``djl_python.huggingface``: the entry point DJL picks for a model folder that names none.

DJL's ``PyModel.load`` falls back to ``djl_python.huggingface`` when neither
``option.entryPoint`` nor ``DJL_ENTRY_POINT`` is set and the folder has a
``config.json`` or ``option.model_id`` (djl-serving v0.28.0 ``PyModel.java:152-171``; from
0.29 it arrives as ``--recommended-entry-point``, 0.34 ``PyModel.java`` ``recommendedEntryPoint``).
DJL's own module of that name is its generic Hugging Face handler; once this package is the
engine (``djl-engine-install``), that name must still load, or such a folder fails to start.

This package has one handler, so this module is that handler under DJL's default name: the
same ``handle`` and ``partition`` as ``djl_python.transformers_neuronx``, the same service
object (one engine per worker whichever name loaded it). It logs, once, that it was chosen by
DJL's default so the user knows ``option.entryPoint`` was not set.
"""

from __future__ import annotations

import logging

from djl_python.transformers_neuronx import handle, partition

__all__ = ["handle", "partition"]

logging.getLogger(__name__).info(
    "no option.entryPoint: DJL chose its default djl_python.huggingface, which this package serves with "
    "djl_python.transformers_neuronx's handler")
