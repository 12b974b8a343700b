"""``transformers_neuronx.version``: the emulated wheel's version string."""

from transformers_neuronx._double import RELEASE

__version__ = RELEASE.version
