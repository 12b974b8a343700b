"""The model's own sampling defaults, from its ``generation_config.json``.

Only the sampling knobs (:mod:`djl_python.engine.knobs`) written in the file count
(``transformers.GenerationConfig`` would invent ``top_k=50`` for a file that never
says so). A request's explicit value always wins, and the model's default wins over
the API's (``resolve_knobs``).

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
from pathlib import Path
from typing import Any, Mapping, Optional

from djl_python.engine.knobs import resolve_knobs, sampling_knobs
from djl_python.engine.request import InvalidRequest, SamplingParams

logger = logging.getLogger(__name__)


class GenerationDefaults(Mapping[str, Any]):
    """Sampling defaults of one model: a read-only mapping from knob name to value, holding
    only the knobs its file sets (empty, hence neutral, when it has none), plus its EOS ids.
    Knobs read as attributes too (``defaults.temperature``: None when unset)."""

    def __init__(self, *, eos_token_ids: tuple[int, ...] = (), **knobs: Any) -> None:
        names = {k.name for k in sampling_knobs()}
        unknown = set(knobs) - names
        if unknown:
            raise TypeError(f"not sampling knobs: {sorted(unknown)}")
        self._knobs = {k: v for k, v in knobs.items() if v is not None}
        self.eos_token_ids = tuple(eos_token_ids)

    def __getitem__(self, name: str) -> Any:
        return self._knobs[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._knobs)

    def __len__(self) -> int:
        return len(self._knobs)

    def __getattr__(self, name: str) -> Optional[Any]:
        if name.startswith("_") or name not in {k.name for k in sampling_knobs()}:
            raise AttributeError(name)
        return self._knobs.get(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationDefaults):
            return NotImplemented
        return self._knobs == other._knobs and self.eos_token_ids == other.eos_token_ids

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GenerationDefaults({self._knobs}, eos_token_ids={self.eos_token_ids})"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> GenerationDefaults:
        """Build from a parsed ``generation_config.json``, keeping only valid values."""
        values: dict[str, Any] = {}
        for knob in sampling_knobs():
            value = config.get(knob.name)
            if value is None:
                continue
            try:
                SamplingParams(**{knob.name: value})
            except (InvalidRequest, TypeError) as err:
                logger.warning("ignoring generation_config.json %s=%r: %s", knob.name, value, err)
                continue
            values[knob.name] = value
        eos = config.get("eos_token_id")
        eos_ids = (eos,) if isinstance(eos, int) else tuple(i for i in (eos or ()) if isinstance(i, int))
        return cls(**values, eos_token_ids=eos_ids)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> GenerationDefaults:
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
        """``params`` with every ``None`` knob filled from these defaults (no API default: for
        offline ``Engine.generate``; every API resolves its requests with ``resolve_knobs``)."""
        current = {k.name: getattr(params, k.name) for k in sampling_knobs()}
        fill = {name: value for name, value in resolve_knobs(current, self).items() if value != current[name]}
        return dataclasses.replace(params, **fill) if fill else params
