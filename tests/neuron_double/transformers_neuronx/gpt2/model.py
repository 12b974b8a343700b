"""``transformers_neuronx.gpt2.model``: ``GPT2ForSampling`` and ``GPT2ForSamplingWithContextBroadcasting``.

From 8b01968 .. 1ade6d7 ``gpt2/model.py``:

* ``GPT2ForSampling(config, batch_size, amp, tp_degree, unroll, init_n_active_tokens,
  neuron_config, **kwargs)``: kwargs go to ``GPT2Config`` (unknown keys: KeyError);
  no context buckets; ``reset()`` takes no argument; ``forward(input_ids,
  cache_ids, start_ids)`` runs token by token with position ids shifted by
  ``start_ids``, so left-padded rows of different lengths are right. This is the
  class DJL (afece25d ``TNXModelLoader.MODEL_TYPE_TO_CLS_LOADER``) and
  optimum-neuron (``GPT2NeuronConfig.NEURONX_CLASS``) load.
* ``GPT2ForSamplingWithContextBroadcasting(..., prompt_batch_size=1, ...)``: what
  ``NeuronAutoModelForCausalLM`` maps ``gpt2`` to. ``reset(context_length_estimate)``
  has a required argument, and a prefill encodes ``prompt_batch_size`` rows (one)
  and broadcasts that row's cache to every row.
"""

from __future__ import annotations

import torch

from transformers_neuronx._runtime import context_sizes, override_config, token_sizes
from transformers_neuronx.base import NeuronModelBase


class GPT2ForSampling(NeuronModelBase):
    def __init__(self, config, batch_size=1, amp="f32", tp_degree=2, unroll=None, init_n_active_tokens=None,
                 neuron_config=None, **kwargs):
        override_config(config, kwargs)
        n_positions = kwargs.get("n_positions")
        if n_positions and n_positions > config.n_positions:
            raise ValueError(f"Sequence length ({n_positions}) cannot be larger than position embedding's context "
                             f"size ({config.n_positions})!")
        self._setup(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree,
                    n_positions=n_positions or config.n_positions, context_buckets=[], neuron_config=neuron_config)

    def forward(self, input_ids, cache_ids, start_ids=None):
        self._check_ready(input_ids)
        cols = list(range(input_ids.shape[1])) if cache_ids is None else [int(c) for c in cache_ids.flatten()]
        starts = [0] * input_ids.shape[0] if start_ids is None else [int(s) for s in start_ids.flatten()]
        return self._static_token_steps(input_ids, cols, starts)


class GPT2ForSamplingWithContextBroadcasting(NeuronModelBase):
    def __init__(self, config, batch_size=1, prompt_batch_size=1, amp="f32", tp_degree=2, unroll=None,
                 context_length_estimate=None, context_unroll=1, neuron_config=None, reorder_cache=False, **kwargs):
        override_config(config, kwargs)
        n_positions = kwargs.get("n_positions") or config.n_positions
        if context_length_estimate is None:
            context_length_estimate = n_positions
        self.prompt_batch_size = prompt_batch_size
        self._setup(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree, n_positions=n_positions,
                    context_buckets=context_sizes(context_length_estimate, token_sizes(n_positions)),
                    neuron_config=neuron_config)

    def reset(self, context_length_estimate):  # noqa: D401 - the real signature has no default
        super().reset()

    def forward(self, input_ids, cache_ids=None, start_ids=None):
        self._check_ready(input_ids)
        if input_ids.shape[1] > 1:  # the context graph encodes prompt_batch_size rows and broadcasts them
            broadcast = input_ids[: self.prompt_batch_size].repeat(input_ids.shape[0] // self.prompt_batch_size, 1)
            starts = None if start_ids is None else start_ids[: self.prompt_batch_size].repeat(
                input_ids.shape[0] // self.prompt_batch_size)
            return self._static(broadcast, cache_ids, starts)
        return self._static(input_ids, cache_ids, start_ids)
