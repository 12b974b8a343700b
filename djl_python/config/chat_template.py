"""``option.chat_template`` / ``--chat-template``: a Jinja template, or the path of a file holding one.

vLLM's ``--chat-template`` takes either form; so does this option. Reading the
file is an explicit step (``load_chat_template``), run by the loader when it
builds the tokenizer and by ``djl-serve`` at start-up so a wrong path fails
before the model loads.
"""

from __future__ import annotations

from pathlib import Path

from djl_python.config.errors import ConfigError, ConfigProblem

_JINJA_MARKERS = ("{{", "{%")


def load_chat_template(value: str, key: str = "option.chat_template") -> str:
    """The template text for ``value``: the file's content if ``value`` names a file, else
    ``value`` itself when it is a Jinja template. ``ConfigError`` naming ``key`` otherwise."""
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(key, value, f"cannot read the file: {exc}")]) from exc
    except ValueError:  # a template with NUL bytes or the like is not a path
        pass
    if any(marker in value for marker in _JINJA_MARKERS):
        return value
    raise ConfigError([ConfigProblem(key, value, "is neither a readable file nor a Jinja template")])
