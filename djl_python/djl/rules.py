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
configuration ``auto`` or ``disable`` only. ``lmi-dist`` and ``trtllm`` reach the
handler only where Java runs no LMI config recommender (0.26, 0.27): from 0.28
the recommender turns Java's MPI mode on for them (v0.28.0
``LmiConfigRecommender.java`` ``setMpiMode``), and ``PyModel.load`` then sizes
MPI workers from the CUDA GPU count (``PyModel.java:196-211``, ``PyEnv.java:340-351``),
which fails on Inferentia or CPU before any Python starts.

**Java rewrites ``auto``.** From DJL 0.28, Java's ``LmiConfigRecommender``
rewrites the ``rolling_batch`` the user wrote before the handler sees it, for
any model folder whose Hugging Face config it finds (``LmiUtils.configureLmiModel``):
0.28 turns ``auto`` (or no value) into ``disable`` unless ``SERVING_FEATURES``
names ``tnx`` (v0.28.0 ``LmiConfigRecommender.java:81-112``), 0.29 also
defaults an unset value to ``disable`` on Neuron images (v0.29.0 ``:105-107``),
0.30-0.34 turn ``auto`` into ``tnx`` on Neuron images (or ``vllm`` from
``max_rolling_batch_size`` 12), and 0.35 on turn every ``auto`` into
``disable`` (v0.35.0, v0.36.0 ``:56-78``). ``tnx`` passes through unchanged in
all of them, unless ``batch_size`` > 1, which makes every value ``disable``.
The handler follows Java into static requests, and when the user's own
configuration (``serving.properties`` in the model folder, else
``OPTION_ROLLING_BATCH``, the precedence of v0.28.0 ``ModelInfo.java:793-811``)
asked for anything but ``disable``, it says once why and how to roll.

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
import re
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


def _java_property(text: str, key: str) -> Optional[str]:
    """``key``'s value in a ``java.util.Properties`` text: ``=``, ``:`` or blanks separate key
    and value, ``#``/``!`` start comments, the last occurrence wins (continuation lines aside)."""
    found: Optional[str] = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"([^=:\s]+)\s*(?:[=:]\s*|\s+)?(.*)$", line)
        if match and match.group(1) == key:
            found = match.group(2).strip()
    return found or None


def written_rolling_batch(model_dir: Optional[str], environ: Mapping[str, str]) -> Optional[str]:
    """``option.rolling_batch`` as the user wrote it, before Java's recommender: the model
    folder's ``serving.properties``, else ``OPTION_ROLLING_BATCH``; None when neither sets it."""
    if model_dir:
        try:
            text = (Path(model_dir) / "serving.properties").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        value = _java_property(text, "option.rolling_batch")
        if value:
            return value
    return environ.get("OPTION_ROLLING_BATCH") or None


def decide(properties: Mapping[str, str], protocol: DjlProtocol, written: Optional[str] = None) -> Decision:
    """Apply Java's rule and the real handler's coercions; never raises. ``written`` is the
    user's own ``rolling_batch`` (``written_rolling_batch``), compared with what Java sent."""
    props = {k: v for k, v in properties.items()}
    warnings: list[str] = []
    rolling = java_rolls(props, protocol)
    raw = props.get("rolling_batch")
    if raw is None:
        props["rolling_batch"] = "disable"
    elif not rolling:
        props["rolling_batch"] = "disable"
        dynamic = str(props.get("batch_size", "1")).strip() not in ("", "1")
        if not dynamic and (written is None or written.strip().lower() != "disable"):
            asked = f"option.rolling_batch={written}" if written else "no option.rolling_batch"
            warnings.append(
                f"DJL {protocol.version} sent option.rolling_batch=disable where this model's configuration has "
                f"{asked}: DJL's LMI config recommender (0.28 and later) rewrites auto to disable (from 0.35 "
                "always; before, unless SERVING_FEATURES names tnx; 0.29 also when unset on Neuron images), and "
                "every value to disable when batch_size > 1. Requests are served one at a time and streaming is "
                "off. To serve a rolling batch set option.rolling_batch=tnx (OPTION_ROLLING_BATCH=tnx), which "
                "DJL passes through unchanged, and no batch_size above 1.")
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
