"""A TEST DOUBLE of transformers-neuronx, emulating one release chosen by ``$TNX_DOUBLE_VERSION``.

The real package only installs on AWS Neuron hosts. This one follows the real
source release by release (``_versions.py`` lists the commits and what was read
there): which names the top level exports, the constructor rules, ``reset``
signatures, how ``input_ids``/``cache_ids`` are padded to buckets, which token
answers, the masks, the full-batch decode, the checkpoint formats. Logits are
real: the Hugging Face model over what each KV row holds (``_runtime.py``).
Lives only under ``tests/``; imported through the ``tnx`` fixture.
"""

from transformers_neuronx._double import RELEASE as _RELEASE
from transformers_neuronx.version import __version__

if _RELEASE.top_level_configs:  # 8b01968 on
    from transformers_neuronx.config import ContinuousBatchingConfig, NeuronConfig, QuantizationConfig
    from transformers_neuronx.constants import GQA
if _RELEASE.layout_enum:  # c8d6bdc on
    from transformers_neuronx.config import GenerationConfig
    from transformers_neuronx.constants import Layout
if _RELEASE.top_level_classes:  # 7a30b42 on
    from transformers_neuronx.bloom.model import BloomForSampling
    from transformers_neuronx.gpt2.model import GPT2ForSamplingWithContextBroadcasting
    from transformers_neuronx.gptj.model import GPTJForSampling
    from transformers_neuronx.gptneox.model import GPTNeoXForSampling
    from transformers_neuronx.llama.model import LlamaForSampling
    from transformers_neuronx.mistral.model import MistralForSampling
    from transformers_neuronx.mixtral.model import MixtralForSampling
    from transformers_neuronx.modeling_auto import NeuronAutoModelForCausalLM
    from transformers_neuronx.opt.model import OPTForSampling
