"""The served model name: one rule for HTTP (``/v1/models``, ``/predictions/{model}``,
``/info``, OpenAI ``model``) and the DJL handler (the chat ``model`` field)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def served_model_name(model_id: Optional[str], model_dir: Optional[str] = None) -> str:
    """The model id as given (a Hub id such as ``org/name``), or the folder name of a local
    path or an ``s3://`` URL; ``model_dir``'s folder name when no id is set; else ``default``."""
    source = model_id or model_dir
    if not source:
        return "default"
    if source.startswith(("/", ".", "s3://", "~")) or Path(source).exists():
        return Path(source.rstrip("/")).name or "default"
    return source
