"""The served model name: one rule for HTTP (``/v1/models``, ``/predictions/{model}``,
``/info``, OpenAI ``model``) and the DJL handler (the chat ``model`` field)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def is_location(source: str) -> bool:
    """Whether ``source`` names a place on this server or in its storage (a local path or an
    ``s3://`` URL) rather than a Hub id: such a name is accepted but never shown to clients."""
    return source.startswith(("/", ".", "s3://", "~")) or Path(source).exists()


def served_model_name(model_id: Optional[str], model_dir: Optional[str] = None) -> str:
    """The model id as given (a Hub id such as ``org/name``), or the folder name of a local
    path or an ``s3://`` URL; ``model_dir``'s folder name when no id is set; else ``default``."""
    source = model_id or model_dir
    if not source:
        return "default"
    if is_location(source):
        return Path(source.rstrip("/")).name or "default"
    return source


def served_names(name: str, model_id: Optional[str], model_dir: Optional[str] = None) -> tuple[str, ...]:
    """Every name a request's ``model`` may use: the served name first, then its aliases (the
    name ``served_model_name`` derives, and the model id exactly as configured). As vLLM, a
    request naming none of these is refused with 404 on the OpenAI routes."""
    derived = served_model_name(model_id, model_dir)
    return tuple(dict.fromkeys(n for n in (name, derived, model_id) if n))
