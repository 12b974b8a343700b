"""A TEST DOUBLE of transformers-neuronx (the real one is only installable on AWS Neuron hosts).

It implements the documented API surface the backend uses (``NeuronConfig`` and
friends, the ``*ForSampling`` classes with ``from_pretrained``, ``load``,
``save``, ``to_neuron``, ``reset``, ``forward``) and computes real logits with
the Hugging Face model, recomputed from what each KV row holds. Lives only under
``tests/``; see ``_runtime.py`` for the semantics and ``_double.py`` for the
test controls.
"""

from transformers_neuronx.version import __version__
from transformers_neuronx.constants import GQA, Layout
from transformers_neuronx.config import (
    ContinuousBatchingConfig,
    GenerationConfig,
    NeuronConfig,
    QuantizationConfig,
)
from transformers_neuronx.bloom.model import BloomForSampling
from transformers_neuronx.gpt2.model import GPT2ForSamplingWithContextBroadcasting
from transformers_neuronx.gptj.model import GPTJForSampling
from transformers_neuronx.gptneox.model import GPTNeoXForSampling
from transformers_neuronx.llama.model import LlamaForSampling
from transformers_neuronx.mistral.model import MistralForSampling
from transformers_neuronx.mixtral.model import MixtralForSampling
from transformers_neuronx.opt.model import OPTForSampling
from transformers_neuronx.modeling_auto import NeuronAutoModelForCausalLM

__all__ = [
    "__version__", "GQA", "Layout", "ContinuousBatchingConfig", "GenerationConfig", "NeuronConfig",
    "QuantizationConfig", "BloomForSampling", "GPT2ForSamplingWithContextBroadcasting", "GPTJForSampling",
    "GPTNeoXForSampling", "LlamaForSampling", "MistralForSampling", "MixtralForSampling", "OPTForSampling",
    "NeuronAutoModelForCausalLM",
]
