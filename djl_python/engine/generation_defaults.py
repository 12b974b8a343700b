"""The model's own sampling defaults, from its ``generation_config.json``.

Only keys written in the file count (``transformers.GenerationConfig`` would
invent ``top_k=50`` for a file that never says so). A request's explicit value
always wins: only ``SamplingParams`` fields left ``None`` are filled.

What is deliberately *not* taken from the file:

* ``do_sample``: ``SamplingParams.do_sample`` is a plain bool that each API
  sets from its own rules, so a request's ``False`` cannot be told from
  "unset". A model whose file says ``do_sample: true`` still decodes greedily
  where the API's default is greedy; its temperature/top-k/top-p apply when a
  request samples.
* ``max_new_tokens`` / ``max_length``: each API has its own default.

Values the file holds that a request could not (for example ``top_p: 0``) are
dropped with a warning rather than blamed on every request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from djl_python.engine.request import InvalidRequest, SamplingParams

logger = logging.getLogger(__name__)

_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "typical_p", "repetition_penalty")


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling defaults of one model; neutral (all ``None``) when it has none."""

    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    typical_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "GenerationDefaults":
        """Build from a parsed ``generation_config.json``, keeping only valid values."""
        values: dict[str, Any] = {}
        for key in _SAMPLING_KEYS:
            value = config.get(key)
            if value is None:
                continue
            try:
                SamplingParams(**{key: value})
            except (InvalidRequest, TypeError) as err:
                logger.warning("ignoring generation_config.json %s=%r: %s", key, value, err)
                continue
            values[key] = value
        eos = config.get("eos_token_id")
        eos_ids = (eos,) if isinstance(eos, int) else tuple(i for i in (eos or ()) if isinstance(i, int))
        return cls(**values, eos_token_ids=eos_ids)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "GenerationDefaults":
        """Read ``model_dir/generation_config.json``; neutral defaults when absent."""
        path = Path(model_dir) / "generation_config.json"
        if not path.is_file():
            return cls()
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable %s: %s", path, err)
            return cls()
        if not isinstance(config, dict):
            logger.warning("ignoring %s: not a JSON object", path)
            return cls()
        return cls.from_dict(config)

    def apply(self, params: SamplingParams) -> SamplingParams:
        """``params`` with every ``None`` sampling field filled from these defaults."""
        fill = {
            key: getattr(self, key)
            for key in _SAMPLING_KEYS
            if getattr(params, key) is None and getattr(self, key) is not None
        }
        return dataclasses.replace(params, **fill) if fill else params
