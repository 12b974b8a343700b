"""The double's model runtime: documented TNX semantics, real logits from the Hugging Face model.

Each KV-cache row is kept as ``{position: token}``. ``forward`` writes the
given tokens at the given ``cache_ids`` and then computes every requested row's
logits by running the HF model over *that row's recorded tokens* from its first
real position to the position just written. Nothing is cached between calls
except those token ids, so a wrong row, a wrong position, a hole, or padding
treated as a token all change (or refuse) the result.

Semantics (reference §1.6):

* continuous batching (``neuron_config.continuous_batching`` set): ``start_ids``
  are ``seq_ids``. Prefill: ``input_ids``/``cache_ids`` ``[n, L]``, right-padded,
  ``cache_ids = arange(len_i)`` then 0, seq_ids ascending; the row restarts.
  Decode: ``[n, 1]`` tokens at per-row positions.
* static batching: every call has exactly ``batch_size`` rows; ``cache_ids`` is
  1-D (``None`` = ``arange(L)``), shared by all rows; ``start_ids[b]`` is row b's
  first real column (left padding).
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import Enum
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tests.models import dtype_kwargs
from transformers_neuronx._double import record


def _canon(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    if hasattr(value, "recorded"):
        return _canon(value.recorded)
    if hasattr(value, "__dict__"):
        return {"type": type(value).__name__, **_canon(vars(value))}
    return value


class PretrainedModel:
    """The old ``module.PretrainedModel`` generation (GPT-J, GPT-NeoX): no serialization."""

    def __init__(self, config: Any, *, batch_size: int = 1, amp: str = "f32", tp_degree: int = 2,
                 n_positions: int | list[int] = 2048, context_length_estimate: Any = None, unroll: Any = None,
                 neuron_config: Any = None, **kwargs: Any) -> None:
        import transformers_neuronx as tnx

        self.config = config
        self.batch_size = batch_size
        self.n_positions = max(n_positions) if isinstance(n_positions, list) else n_positions
        if isinstance(context_length_estimate, int):
            context_length_estimate = [context_length_estimate]
        self.context_buckets = sorted(context_length_estimate or [self.n_positions])
        self.neuron_config = neuron_config if neuron_config is not None else tnx.NeuronConfig()
        self.continuous = bool(getattr(self.neuron_config, "continuous_batching", None))
        self.version = tnx.__version__
        self.checkpoint: str | None = None
        self._neff_dir: str | None = None
        self._hf: Any = None
        self.rows: dict[int, dict[int, int]] = {}
        self._memo: dict[tuple[int, ...], torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_path: str, *model_args: Any, **kwargs: Any) -> PretrainedModel:
        nc = kwargs.get("neuron_config")
        n_positions = kwargs.get("n_positions", 2048)
        cle = kwargs.get("context_length_estimate")
        if isinstance(cle, list) and cle:
            assert max(cle) <= (max(n_positions) if isinstance(n_positions, list) else n_positions)
        if nc is not None and getattr(nc, "continuous_batching", None):
            shared = nc.continuous_batching.batch_size_for_shared_caches
            assert shared == kwargs.get("batch_size"), (
                f"invalid batch_size_for_shared_caches ({shared}), {kwargs.get('batch_size')} is expected")
        if nc is not None and getattr(nc, "quant", None) is not None:
            assert kwargs.get("amp") == nc.quant.dequant_dtype, "amp must equal quant.dequant_dtype"
        model = cls(AutoConfig.from_pretrained(pretrained_model_path), *model_args, **kwargs)
        model.checkpoint = pretrained_model_path
        record("from_pretrained", cls.__name__, pretrained_model_path, dict(kwargs))
        return model

    # -- compile / serialize -------------------------------------------------------------------
    def graph_hashes(self) -> list[str]:
        """One "NEFF" per context bucket plus the token graph, hashed like TNX: any setting change misses."""
        # The HLO depends on the architecture, not on where the checkpoint lives or which library wrote it.
        arch = {k: v for k, v in self.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
        spec = {"class": type(self).__name__, "version": self.version, "batch_size": self.batch_size,
                "n_positions": self.n_positions, "config": arch,
                "neuron_config": _canon(self.neuron_config)}
        graphs = [("context", b) for b in self.context_buckets] + [("token", self.n_positions)]
        return [hashlib.sha256(json.dumps({**spec, "graph": g}, sort_keys=True, default=str).encode()).hexdigest()[:20]
                for g in graphs]

    def to_neuron(self) -> None:
        if self._neff_dir is not None:
            missing = [h for h in self.graph_hashes() if not os.path.isfile(os.path.join(self._neff_dir, f"{h}.neff"))]
            if missing:
                raise RuntimeError(f"Could not find a matching NEFF for your HLO in {self._neff_dir}")
            record("to_neuron", type(self).__name__, "loaded")
        else:
            record("to_neuron", type(self).__name__, "compile")
        self._hf = AutoModelForCausalLM.from_pretrained(self.checkpoint, **dtype_kwargs(torch.float32)).eval()

    def reset(self) -> None:
        record("reset", type(self).__name__)
        self.rows.clear()

    # -- forward ---------------------------------------------------------------------------------
    def _logits(self, row: int, first: int, last: int) -> torch.Tensor:
        cells = self.rows.get(row, {})
        holes = [p for p in range(first, last + 1) if p not in cells]
        assert not holes, f"row {row}: positions {holes[:5]} were never written (KV cache hole)"
        tokens = tuple(cells[p] for p in range(first, last + 1))
        # Logits are a pure function of the token sequence; memoising only saves time (re-prefills repeat them).
        if tokens not in self._memo:
            with torch.inference_mode():
                self._memo[tokens] = self._hf(input_ids=torch.tensor([tokens])).logits[0, -1].float()
        return self._memo[tokens]

    def _run(self, input_ids: torch.Tensor, cache_ids: torch.Tensor | None, start_ids: torch.Tensor | None):
        assert self._hf is not None, "forward() before to_neuron()"
        assert input_ids.dim() == 2, f"input_ids must be [batch, length], got {tuple(input_ids.shape)}"
        if self.continuous:
            return self._run_continuous(input_ids, cache_ids, start_ids)
        return self._run_static(input_ids, cache_ids, start_ids)

    def _run_continuous(self, input_ids, cache_ids, seq_ids):
        n, length = input_ids.shape
        seqs = [int(s) for s in seq_ids.flatten()]
        assert len(seqs) == n and len(set(seqs)) == n and all(0 <= s < self.batch_size for s in seqs), seqs
        assert cache_ids is not None and tuple(cache_ids.shape) == (n, length), "cache_ids must be [n, L]"
        out = []
        if length > 1:  # prefill: one sequence at a time, padded to the smallest context bucket
            assert seqs == sorted(seqs), f"seq_ids of a prefill must be ascending, got {seqs}"
            fits = [b for b in self.context_buckets if b >= length]
            assert fits, f"prompt width {length} exceeds the largest context bucket {self.context_buckets[-1]}"
            record("context_bucket", fits[0])
            for i, seq in enumerate(seqs):
                real = int(cache_ids[i].max()) + 1
                assert cache_ids[i, :real].tolist() == list(range(real)), "cache_ids must be arange(len) first"
                assert not cache_ids[i, real:].any(), "cache_ids must be 0 on the right padding"
                self.rows[seq] = {p: int(t) for p, t in enumerate(input_ids[i, :real])}
                out.append(self._logits(seq, 0, real - 1))
        else:
            for i, seq in enumerate(seqs):
                pos = int(cache_ids[i, 0])
                assert pos < self.n_positions, f"position {pos} >= n_positions {self.n_positions}"
                self.rows.setdefault(seq, {})[pos] = int(input_ids[i, 0])
                out.append(self._logits(seq, 0, pos))
        return torch.stack(out)

    def _run_static(self, input_ids, cache_ids, start_ids):
        batch, length = input_ids.shape
        assert batch == self.batch_size, f"static batching needs all {self.batch_size} rows, got {batch}"
        cols = list(range(length)) if cache_ids is None else [int(c) for c in cache_ids.flatten()]
        assert len(cols) == length, "static batching takes one 1-D cache_ids shared by all rows"
        assert cols[-1] < self.n_positions, f"column {cols[-1]} >= n_positions {self.n_positions}"
        starts = [0] * batch if start_ids is None else [int(s) for s in start_ids.flatten()]
        out = []
        for b in range(batch):
            cells = self.rows.setdefault(b, {})
            for j, col in enumerate(cols):
                cells[col] = int(input_ids[b, j])
            out.append(self._logits(b, starts[b], cols[-1]))
        return torch.stack(out)


class NeuronModelBase(PretrainedModel):
    """The ``base.NeuronModelBase`` generation: save()/load() of compiled graphs."""

    def save(self, directory: str, sharded_weights: bool = False) -> None:
        os.makedirs(directory, exist_ok=True)
        for digest in self.graph_hashes():
            with open(os.path.join(directory, f"{digest}.neff"), "wb") as out:
                out.write(b"NEFF-double " + digest.encode())
        record("save", type(self).__name__, directory)

    def load(self, directory: str) -> None:
        self._neff_dir = directory
        record("load", type(self).__name__, directory)

    def forward(self, input_ids, cache_ids=None, start_ids=None):
        return self._run(input_ids, cache_ids, start_ids)
