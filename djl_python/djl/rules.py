"""Java's rolling-or-plain rule and the defaults of a handler that DJL launched.

**Rolling or plain.** Java decides, per model, whether to run its RollingBatch
loop (``PyPredictor``'s constructor, djl-serving ``engines/python/src/main/java/
ai/djl/python/engine/PyPredictor.java``):

* v0.26.0: ``model.getProperty("rolling_batch") != null``;
* v0.27.0, v0.28.0: ``... != null && !"disable".equals(...)``.

The property map Java compares is the one it sends in the initialising
message (``PyModel.load`` copies every option into both), so the handler can
apply the same test to what it receives. The handler must follow Java, not
its own configuration: in rolling mode Java reads every reply as per-request
records, in plain mode as a whole response.

**Coerced values.** The real TNX handler's ``TransformerNeuronXProperties``
(``properties_manager/tnx_properties.py``, ``validate_rolling_batch``) turns a
``rolling_batch`` outside its supported list into ``auto`` with a warning, and
only ``disable`` means static: so ``false``, ``scheduler``, ``trtllm`` (and on
0.26/0.27 also ``vllm`` and ``lmi-dist``; 0.28 lists them but still serves
them with a rolling batch) all roll. We do the same, say so, and hand our
configuration ``auto`` or ``disable`` only.

**n_positions.** LMI 0.26-0.28's ``TransformerNeuronXProperties.n_positions``
defaults to 128, so graphs compiled there (and their neff cache entries)
assume 128. A handler launched by DJL therefore defaults to 128 too, with a
warning naming ``option.n_positions``, unless the model folder is an already
compiled artifact (``config.json`` has a ``neuron`` block), whose own shape
then decides.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from djl_python.djl.protocol import DjlProtocol

logger = logging.getLogger(__name__)

LMI_N_POSITIONS_DEFAULT = "128"
# Values the real handler serves with a rolling batch without running what they name.
COERCED = ("false", "scheduler", "vllm", "lmi-dist", "trtllm")
OUR_ROLLING = ("auto", "tnx")


@dataclass(frozen=True)
class Decision:
    """What a DJL-launched handler does with the initialising properties."""

    rolling: bool
    properties: dict[str, str]  # what the configuration layer sees
    warnings: tuple[str, ...]


def java_rolls(properties: Mapping[str, object], protocol: DjlProtocol) -> bool:
    """Whether Java (of ``protocol``'s release) runs its rolling loop for these model properties."""
    value = properties.get("rolling_batch")
    if value is None:
        return False
    return not (protocol.disable_means_plain and str(value) == "disable")


def is_plain_message(properties: Mapping[str, object]) -> bool:
    """A message without ``batch_size`` is one plain request (Java's non-rolling path)."""
    return "batch_size" not in properties


def decide(properties: Mapping[str, str], protocol: DjlProtocol) -> Decision:
    """Apply Java's rule and the real handler's coercions; never raises."""
    props = {k: v for k, v in properties.items()}
    warnings: list[str] = []
    rolling = java_rolls(props, protocol)
    raw = props.get("rolling_batch")
    if raw is None:
        props["rolling_batch"] = "disable"
    elif not rolling:
        props["rolling_batch"] = "disable"
    else:
        value = str(raw).strip().lower()
        if value == "disable":
            # Only DJL 0.26 gets here: its Java rolls for any value, so we must answer in records.
            warnings.append(
                f"option.rolling_batch=disable: DJL {protocol.version}'s front end still drives a rolling batch "
                "for it (it only checks that the key is set); serving a rolling batch. Remove the key for "
                "static batches.")
        elif value not in OUR_ROLLING:
            warnings.append(
                f"option.rolling_batch={raw}: DJL's Transformers-NeuronX handler coerces it to auto, and so do we: "
                f"it is served with this handler's rolling batch, not by {raw}. Set auto or tnx to silence this.")
        props["rolling_batch"] = "auto"
    if "n_positions" not in props and not _compiled_artifact(props):
        props["n_positions"] = LMI_N_POSITIONS_DEFAULT
        warnings.append(
            "option.n_positions is not set: defaulting to 128, the default of LMI 0.26-0.28, so graphs compiled "
            "there (and their neff cache) are reused. Set option.n_positions for longer sequences.")
    for text in warnings:
        logger.warning(text)
    return Decision(rolling=rolling, properties=props, warnings=tuple(warnings))


def _compiled_artifact(props: Mapping[str, str]) -> bool:
    """True when the local model folder is a compiled Neuron artifact (``neuron`` in ``config.json``)."""
    for key in ("model_id", "model_dir"):
        folder: Optional[str] = props.get(key)
        if not folder:
            continue
        config = Path(folder) / "config.json"
        try:
            if config.is_file() and "neuron" in json.loads(config.read_text()):
                return True
        except (OSError, ValueError):
            continue  # the loader reports unreadable configs with context
    return False
