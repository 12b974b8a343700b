"""``transformers_neuronx.constants``: layout strings (0.9+), ``GQA`` (0.9+), ``Layout`` (0.11+).

The 0.11 ``Layout`` compares equal to its string value (c8d6bdc constants.py ``__eq__``).
"""

import enum

from transformers_neuronx._double import RELEASE

LAYOUT_BSH = "BSH"
LAYOUT_HSB = "HSB"
LAYOUT_SBH = "SBH"


class Layout(enum.Enum):
    HSB = "HSB"
    BSH = "BSH"
    SBH = "SBH"

    def __eq__(self, value):
        return super().__eq__(Layout(value))

    def __hash__(self):
        return hash(self.value)


class GQA(enum.Enum):
    SHARD_OVER_HEADS = "shard-over-heads"
    SHARD_OVER_BATCH = "shard-over-batch"
    REPLICATED_HEADS = "replicated-heads"
    ALL_GATHER_HEADS = "all-gather-heads"


if not RELEASE.gqa:  # 90c7199 constants.py has neither
    del GQA, LAYOUT_BSH, LAYOUT_HSB, LAYOUT_SBH
if not RELEASE.layout_enum:
    del Layout
