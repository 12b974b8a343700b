"""``transformers_neuronx.base.NeuronModelBase``: forward as each release runs it (LLaMA, Mistral, Mixtral, BLOOM, OPT).

``forward(input_ids, cache_ids=None, start_ids=None)`` follows ``base._preprocess``:

1. ``_prepare_for_continuous_batching`` (only with ``neuron_config.continuous_batching``
   and ``start_ids`` given, which are then ``seq_ids``):

   * prefill (more than one column and ``cache_ids[0, 0] == 0``): ``cache_ids``
     are zero-padded to ``context_buckets[-1]`` (8b01968, 7a30b42) or to the
     bucket that fits the width (0623de2 on); a width over that bucket is an
     ``AssertionError``;
   * decode: padded to the *full batch*: each slot not listed gets token 0 at
     cache position 0 (every release).

2. ``_prepare_for_par_ctx_rhs_padding``: ``input_ids`` right-padded to the
   context bucket; ``last_token_id`` is ``min(width - 1, bucket - 1)`` for the
   whole batch, or per row ``cache_ids.max(dim=1)`` where
   ``neuron_config.vectorize_last_token_id`` exists and is on (0623de2 on,
   continuous batching). Explicit static ``cache_ids`` are padded too from
   0623de2 (``_pad_cache_ids``); before, they keep their width and the context
   graph rejects them.

3. Continuous-batching prefill runs one sequence at a time (``context_batch_sizes
   = [1]``); before 0623de2 each row of a multi-row prefill takes its own
   ``cache_ids.max()`` and a one-row prefill the scalar above.

A context graph writes its whole window: token ``j`` at cache position
``cache_ids[j]`` (static) or ``j`` (continuous batching, whose rows start at 0).
A width beyond the largest bucket (static) runs the largest bucket and then the
rest one token at a time, as ``base.context`` does.
"""

from __future__ import annotations

from typing import Any

import torch

from transformers_neuronx._double import RELEASE, record
from transformers_neuronx._runtime import CompiledModel, context_sizes, find, save_presharded, token_sizes


class NeuronModelBase(CompiledModel):
    strict_config_kwargs = False  # BLOOM/OPT pass **kwargs to their config (unknown keys: KeyError)
    masked_static_nan = False  # static batching with non-zero start_ids answers NaN (Llama, Mistral < 0.11)

    def __init__(self, config: Any, *, n_positions: int | list[int] = 2048, batch_size: int = 1, amp: str = "f32",
                 tp_degree: int = 2, context_length_estimate: Any = None, context_unroll: Any = None,
                 unroll: Any = None, neuron_config: Any = None, **kwargs: Any) -> None:
        if self.strict_config_kwargs:
            from transformers_neuronx._runtime import override_config

            override_config(config, kwargs)
        buckets = context_sizes(context_length_estimate, token_sizes(n_positions))
        if RELEASE.label == "0.13" and buckets:  # 1ade6d7 module.py:401-406
            assert max(buckets) <= max(token_sizes(n_positions)), (
                f"Max context_length_estimate {max(buckets)} cannot be more than max n_positions "
                f"{max(token_sizes(n_positions))}")
        self._setup(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree, n_positions=n_positions,
                    context_buckets=buckets, neuron_config=neuron_config)

    # -- serialization (base.NeuronModelBase.save / load) ------------------------------------------
    def _save(self, directory: str, sharded_weights: bool = False) -> None:
        import os

        os.makedirs(directory, exist_ok=True)
        for digest in self.graph_hashes():
            with open(os.path.join(directory, f"{digest}.neff"), "wb") as out:
                out.write(b"NEFF-double " + digest.encode())
        if sharded_weights:
            save_presharded(self, directory)
        record("save", type(self).__name__, directory, sharded_weights)

    if RELEASE.presharded:  # 1ade6d7: save(directory, sharded_weights=False)
        def save(self, directory: str, sharded_weights: bool = False) -> None:
            self._save(directory, sharded_weights)
    else:  # 8b01968 .. c8d6bdc: save(directory)
        def save(self, directory: str) -> None:
            self._save(directory)

    def load(self, directory: str) -> None:
        self._neff_dir = directory
        record("load", type(self).__name__, directory)

    # -- speculation (base.NeuronModelBase.enable_speculative_decoder) -----------------------------
    def enable_speculative_decoder(self, speculation_length: int | list[int], batch_sizes: Any = None,
                                   token_tree: Any = None) -> None:
        """A speculation graph per ``k`` (8b01968 base.py:75-79, 7a30b42 base.py:76-80: keyed by ``k``) or per
        ``(k, batch_size)`` with ``batch_sizes`` defaulting to the compiled batch (0623de2 base.py:76-86,
        c8d6bdc base.py:77-87, 1ade6d7 base.py:122-132). Built by ``to_neuron()``: a call after it adds a
        graph that was never compiled, which the double refuses."""
        assert self.device is None, "enable_speculative_decoder() after to_neuron(): its graphs would not be compiled"
        lengths = [speculation_length] if isinstance(speculation_length, int) else list(speculation_length)
        tuple_keys = RELEASE.label not in ("0.8", "0.9", "0.10-early")
        sizes = [self.batch_size] if batch_sizes is None else (
            [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes))
        for k in lengths:
            for size in (sizes if tuple_keys else [None]):
                self.decoder_lm_head_for_speculation[(k, size) if tuple_keys else k] = "speculation"
        record("enable_speculative_decoder", type(self).__name__, tuple(lengths))

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, cache_ids: torch.Tensor | None = None,
                start_ids: torch.Tensor | None = None) -> torch.Tensor:
        self._check_ready(input_ids)
        if self.continuous and start_ids is not None:
            if input_ids.shape[1] > 1 and int(cache_ids.flatten()[0]) == 0:
                return self._cb_prefill(input_ids, cache_ids, start_ids)
            return self._cb_decode(input_ids, cache_ids, start_ids)
        return self._static(input_ids, cache_ids, start_ids)

    def _cb_prefill(self, input_ids: torch.Tensor, cache_ids: torch.Tensor, seq_ids: torch.Tensor) -> torch.Tensor:
        device = self.device
        n, width = input_ids.shape
        assert tuple(cache_ids.shape) == (n, width), f"cache_ids {tuple(cache_ids.shape)} for input {(n, width)}"
        pad_to = self.context_buckets[-1] if RELEASE.cb_prefill_cache_pad == "largest" \
            else find(self.context_buckets, width)
        assert width <= pad_to, f"invalid input prompt length ({width} <= {pad_to})"
        if getattr(self.neuron_config, "use_1d_query", False) and n > 1:
            # 1ade6d7 base.py:520-533: the prompts are concatenated into one row; their total length
            # must fit a context bucket.
            total = int((cache_ids.max(dim=1).values + 1).sum())
            fits = find(self.context_buckets, total)
            assert fits is not None and fits >= total, (
                f"n_active_tokens ({total}) is expected to be less than n_positions ({fits}) "
                "for concatenated prompt encoding")
        cache = torch.zeros(n, pad_to, dtype=torch.int64)
        cache[:, :width] = cache_ids[:, :width]
        bucket = find(self.context_buckets, width)
        vectorized = bool(getattr(self.neuron_config, "vectorize_last_token_id", False))
        if vectorized:
            last = [int(v) for v in cache.max(dim=1).values]
        else:
            scalar = min(width - 1, bucket - 1)
            last = [int(cache[i].max()) for i in range(n)] if n > 1 else [scalar]
        if width < bucket:
            input_ids = torch.cat([input_ids, torch.zeros(n, bucket - width, dtype=input_ids.dtype)], dim=1)
            if vectorized:  # 0623de2 _pad_cache_ids with use_2d_cache_ids: arange(bucket) per row
                cache = torch.arange(bucket).expand(n, bucket)
        if cache.shape[1] != bucket:
            raise RuntimeError(f"context graph for bucket {bucket} got cache_ids of width {cache.shape[1]} "
                               "(shape mismatch with the compiled graph)")
        seqs = [int(s) for s in seq_ids.flatten()]
        assert len(seqs) == n and all(0 <= s < self.batch_size for s in seqs), f"seq_ids {seqs}"
        record("context_bucket", bucket)
        out = []
        for i, seq in enumerate(seqs):
            device.rows[seq] = {}
            for j in range(bucket):
                self._check_position(j)  # a context graph longer than the KV cache writes out of range
                device.write(seq, j, int(input_ids[i, j]))
            out.append(device.logits(seq, 0, last[i]))
        return torch.stack(out)

    def _cb_decode(self, input_ids: torch.Tensor, cache_ids: torch.Tensor, seq_ids: torch.Tensor) -> torch.Tensor:
        device = self.device
        n = input_ids.shape[0]
        assert input_ids.shape[1] == 1, "speculative (multi-token, cache_ids > 0) forward is not emulated"
        full_tokens, full_cache = [0] * self.batch_size, [0] * self.batch_size
        seqs = [int(s) for s in seq_ids.flatten()]
        assert len(seqs) == n and len(set(seqs)) == n, f"seq_ids {seqs}"
        for i, seq in enumerate(seqs):
            full_tokens[seq], full_cache[seq] = int(input_ids[i, 0]), int(cache_ids.flatten()[i])
        unlisted = [s for s in range(self.batch_size) if s not in seqs]
        if unlisted:
            record("cb_decode_unlisted", tuple(unlisted))
        for row in range(self.batch_size):  # the hardware runs the full batch
            self._check_position(full_cache[row])
            device.write(row, full_cache[row], full_tokens[row])
        return torch.stack([device.logits(seq, 0, full_cache[seq], self._token_window(seq, full_cache[seq]))
                            for seq in seqs])

    def _static(self, input_ids: torch.Tensor, cache_ids: torch.Tensor | None,
                start_ids: torch.Tensor | None) -> torch.Tensor:
        logits = self._static_logits(input_ids, cache_ids, start_ids)
        if self.masked_static_nan and start_ids is not None and bool(start_ids.ne(0).any()):
            # aws-neuron/transformers-neuronx#79: "when specifying anything else than None or 0 [as
            # start_ids] ... forward() returns NaN scores" (Llama, filed against the 0.9/0.10 era,
            # confirmed fixed in Neuron 2.19, TNX 0.11).
            record("masked_static_nan", True)
            return torch.full_like(logits, float("nan"))
        return logits

    def _static_logits(self, input_ids: torch.Tensor, cache_ids: torch.Tensor | None,
                       start_ids: torch.Tensor | None) -> torch.Tensor:
        batch, width = input_ids.shape
        starts = [0] * batch if start_ids is None else [int(s) for s in start_ids.flatten()]
        given = None if cache_ids is None else [int(c) for c in cache_ids.flatten()]
        if width == 1:
            return self._static_token_steps(input_ids, given or [0], starts)
        bucket = find(self.context_buckets, width)
        if bucket is None:  # no context graphs: token by token
            return self._static_token_steps(input_ids, given or list(range(width)), starts)
        if width < bucket:
            input_ids = torch.cat([input_ids, torch.zeros(batch, bucket - width, dtype=input_ids.dtype)], dim=1)
            if given is None:
                given = list(range(bucket))
            elif RELEASE.static_pads_cache_ids:
                given = [min(c, bucket - 1) for c in given + list(range(given[-1] + 1, given[-1] + 1 + bucket - width))]
        cols = given if given is not None else list(range(input_ids.shape[1]))
        if len(cols) != input_ids.shape[1]:
            raise RuntimeError(f"context graph for bucket {bucket} got {len(cols)} cache_ids for "
                               f"{input_ids.shape[1]} input columns (shape mismatch with the compiled graph)")
        record("context_bucket", bucket)
        if width == bucket + 1 and RELEASE.leftover_skips_last:
            # 7a30b42/0623de2 base.context: the leftover loop never starts; the last column is not run and the
            # context graph's answer (its last column) is returned.
            return self._static_token_steps(input_ids[:, :bucket], cols[:bucket], starts)
        # The answer is at last_token_id = min(width, bucket) - 1 of the caller's columns, never at the padding;
        # past the largest bucket the remaining columns run one at a time and the last one answers.
        return self._static_token_steps(input_ids, cols, starts, answer_at=cols[width - 1])
