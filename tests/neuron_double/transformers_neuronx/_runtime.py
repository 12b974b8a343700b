"""The double's "NeuronCore": KV rows of token ids, and logits from the Hugging Face model.

Each KV-cache row is ``{position: token id}``. A forward writes tokens where the
emulated release would write them, then answers each row with the logits the HF
model gives for the tokens that row *attends to* (``first..last`` of that row, in
order). Nothing else is cached, so a wrong row, a wrong position, a hole, padding
that is attended, or a last token taken at a padding column all change (or
refuse) the result. Logits are memoised per token sequence only to save time.

Shapes are checked as the compiled graphs check them: a context graph of
bucket ``b`` takes exactly ``b`` input and cache ids per row.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
from enum import Enum
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from transformers_neuronx._double import RELEASE, record
from transformers_neuronx.module import PRESHARDED_FILE, PretrainedModel, read_split_dir


def _fp32_kwargs() -> dict:
    """fp32 for ``from_pretrained``: ``dtype`` from transformers 4.56, ``torch_dtype`` before. Kept
    here rather than imported from ``tests``: the double is a stand-alone package, found on a
    worker's ``PYTHONPATH`` as the real one is in a Neuron image."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


def power_of_two_bucket_sizes(min_size: int, max_size: int) -> list[int]:
    """``utils.power_of_two_bucket_sizes`` (8b01968 utils.py)."""
    sizes, size = [], min_size
    while size < max_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_size]


def token_sizes(n_positions: int | list[int]) -> list[int]:
    """``bucket.token_sizes``: a list as given, else powers of two from 128."""
    return sorted(n_positions) if isinstance(n_positions, list) else power_of_two_bucket_sizes(128, n_positions)


def context_sizes(cle: int | list[int] | None, token_buckets: list[int]) -> list[int]:
    """``bucket.context_sizes``: a list as given; an int alone (0: none); None: half of each token bucket."""
    if isinstance(cle, list):
        return sorted(cle)
    if isinstance(cle, int):
        return [] if cle <= 0 else [cle]
    return [b // 2 for b in token_buckets]


def find(buckets: list[int], size: int) -> int | None:
    """``bucket.find``: the smallest bucket >= size, else the largest; None without buckets."""
    if not buckets:
        return None
    fits = [b for b in buckets if b >= size]
    return fits[0] if fits else buckets[-1]


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


def override_config(hf_config: Any, kwargs: dict[str, Any]) -> None:
    """``utils.maybe_override_attributes``: GPT2/GPT-J/GPT-NeoX/OPT/BLOOM configs refuse unknown keys."""
    for key in kwargs:
        if not hasattr(hf_config, key) and key not in ("n_positions", "batch_size", "amp", "tp_degree"):
            raise KeyError(f'Found invalid key "{key}".')


class Device:
    """The model's KV rows and the HF model that turns an attended token sequence into logits."""

    def __init__(self, model: Any, key: str) -> None:
        from tnx_double_memo import MEMO

        self.hf, self.key = model, key
        self.rows: dict[int, dict[int, int]] = {}
        self._memo = MEMO

    def write(self, row: int, position: int, token: int) -> None:
        self.rows.setdefault(row, {})[position] = token

    def logits(self, row: int, first: int, last: int, window: tuple[int, int] | None = None) -> torch.Tensor:
        """The HF logits after the tokens of ``row`` at ``first..last``; with ``window`` ``(start, size)``,
        only the cached positions in ``[start, start + size)`` and ``last`` itself (a sliced KV cache)."""
        cells = self.rows.get(row, {})
        attended = range(first, last + 1)
        if window is not None:
            attended = [p for p in attended if window[0] <= p < window[0] + window[1] or p == last]
        if not attended:  # start_ids past the columns run: every score masked, a NaN softmax
            return torch.full((self.hf.config.vocab_size,), float("nan"))
        holes = [p for p in attended if p not in cells]
        assert not holes, f"row {row}: positions {holes[:5]} were never written (KV cache hole)"
        tokens = tuple(cells[p] for p in attended)
        if (self.key, tokens) not in self._memo:
            with torch.inference_mode():
                self._memo[self.key, tokens] = self.hf(input_ids=torch.tensor([tokens])).logits[0, -1].float()
        return self._memo[self.key, tokens]


class CompiledModel(PretrainedModel):
    """What every model class shares: buckets, compile/load of graphs, the device, ``n_positions`` bound."""

    serializable = True
    causal_mask_only = False  # GPT-J: the mask ignores start_ids

    def _setup(self, config: Any, *, batch_size: int, amp: str, tp_degree: int, n_positions: int | list[int],
               context_buckets: list[int], neuron_config: Any) -> None:
        from transformers_neuronx.config import NeuronConfig

        self.config = config
        self.batch_size = batch_size
        self.amp, self.tp_degree = amp, tp_degree
        self.token_buckets = token_sizes(n_positions)
        self.n_positions = self.token_buckets[-1]
        self.context_buckets = context_buckets
        self.neuron_config = neuron_config if neuron_config is not None else NeuronConfig()
        self.continuous = bool(getattr(self.neuron_config, "continuous_batching", None))
        # enable_speculative_decoder's graphs: int k before 0623de2, (k, batch_size) from it.
        self.decoder_lm_head_for_speculation: dict[Any, str] = {}
        self._neff_dir: str | None = None
        self.device: Device | None = None

    # -- compile / serialize -------------------------------------------------------------------
    def graph_hashes(self) -> list[str]:
        """One "NEFF" per context bucket plus the token graph: any setting change misses, as the HLO hash does."""
        arch = {k: v for k, v in self.config.to_dict().items()
                if not k.startswith("_") and k not in ("transformers_version", "is_presharded_checkpoint")}
        # compilation_worker_count only sizes the compile pool (1ade6d7 base.py:88): not in the HLO.
        neuron_config = {k: v for k, v in _canon(self.neuron_config).items() if k != "compilation_worker_count"}
        spec = {"class": type(self).__name__, "release": RELEASE.label, "batch_size": self.batch_size,
                "amp": self.amp, "tp_degree": self.tp_degree, "token_buckets": self.token_buckets,
                "config": arch, "neuron_config": neuron_config}
        graphs = [("context", b) for b in self.context_buckets] + [("token", b) for b in self.token_buckets]
        graphs += [("speculation", str(key), b) for key in sorted(self.decoder_lm_head_for_speculation, key=str)
                   for b in self.token_buckets]
        return [hashlib.sha256(json.dumps({**spec, "graph": g}, sort_keys=True, default=str).encode()).hexdigest()[:20]
                for g in graphs]

    def to_neuron(self) -> None:
        """Weights first, then the graphs, as every release does: the weights are loaded (and, on
        hardware, sharded onto the device) before the saved graphs are looked up, and a graph
        whose HLO hash has no saved NEFF raises ``FileNotFoundError`` (not ``RuntimeError``),
        with upstream's message, after all of that.

        transformers-neuronx (aws-neuron/transformers-neuronx):
        90c7199 (0.8) decoder.py:117-153 (``to_neuron`` shards the weights, then
        ``set_neff_bytes``), base.py:266-277; 8b01968 (0.9.474) base.py:66-71 (``load_weights``
        then ``_load_compiled_artifacts``), base.py:419-429; 1ade6d7 (0.13) base.py:77-89,
        base.py:775-785."""
        device = Device(self._hf_model(), f"{os.path.realpath(self.checkpoint)}:{self.weights_format}")
        if self._neff_dir is not None:
            missing = [h for h in self.graph_hashes() if not os.path.isfile(os.path.join(self._neff_dir, f"{h}.neff"))]
            if missing:
                record("to_neuron", type(self).__name__, "weights loaded, no matching NEFF")
                raise FileNotFoundError(
                    "Could not find a matching NEFF for your HLO in this directory. Ensure that the model you "
                    "are trying to load is the same type and has the same parameters as the one you saved or "
                    'call "save" on this model to reserialize it.')
            record("to_neuron", type(self).__name__, "loaded")
        else:
            self._compile()
            record("to_neuron", type(self).__name__, "compile")
        self.device = device

    def _compile(self) -> None:
        """``compile()``: every graph in a ``ProcessPoolExecutor(parallel_degree)`` with the default
        multiprocessing start method (8b01968 base.py:44-53, 7a30b42 base.py:45-54, c8d6bdc base.py:46-55,
        1ade6d7 base.py:55-64; no release sets a start method). ``parallel_degree`` is
        ``NeuronConfig.compilation_worker_count`` from 1ade6d7 (base.py:88), else one worker per graph.

        Stricter than the library: on Linux that default is ``fork``, and forking a process whose other
        threads may hold locks can deadlock the compile workers. A compile from a thread other than
        the main one (a loader beside a server's threads) under ``fork`` is refused here instead of
        hanging some day on hardware; tests that build models directly call from the main thread."""
        workers = len(self.graph_hashes())
        if "compilation_worker_count" in RELEASE.neuron_config_keys:
            workers = getattr(self.neuron_config, "compilation_worker_count", None) or workers
        method = multiprocessing.get_start_method()
        if method == "fork" and threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"compile(): ProcessPoolExecutor would fork this process from thread "
                               f"{threading.current_thread().name!r} while {threading.active_count()} threads run "
                               "(the compile workers can deadlock)")
        record("compile", type(self).__name__, workers, method, os.getcwd())

    def _hf_model(self) -> Any:
        path, fmt = self.checkpoint, self.weights_format
        if fmt == "presharded":
            saved = torch.load(os.path.join(path, PRESHARDED_FILE), weights_only=False)
            model = AutoModelForCausalLM.from_config(self.config.__class__.from_dict(saved["config"]))
            model.load_state_dict(saved["state_dict"])
            return model.float().eval()
        if fmt == "bin-dir":
            model = AutoModelForCausalLM.from_config(self.config)
            model.load_state_dict(read_split_dir(os.path.join(path, "pytorch_model.bin")), strict=False)
            return model.float().eval()
        return AutoModelForCausalLM.from_pretrained(path, **_fp32_kwargs()).eval()

    def reset(self) -> None:
        record("reset", type(self).__name__)
        if self.device is not None:
            self.device.rows.clear()

    # -- shared forward pieces ------------------------------------------------------------------
    def _check_ready(self, input_ids: torch.Tensor) -> Device:
        assert self.device is not None, "forward() before to_neuron()"
        assert input_ids.dim() == 2, f"input_ids must be [batch, length], got {tuple(input_ids.shape)}"
        return self.device

    def _check_position(self, position: int) -> None:
        assert 0 <= position < self.n_positions, f"cache position {position} outside [0, {self.n_positions})"

    def _first(self, start: int) -> int:
        return 0 if self.causal_mask_only else start

    def _token_window(self, row: int, position: int) -> tuple[int, int] | None:
        """The KV slice a one-token step attends, as ``(start, size)``; None: all of it (every model but
        Mistral, :mod:`transformers_neuronx.mistral.model`)."""
        return None

    def _static_token_steps(self, input_ids: torch.Tensor, cache_ids: list[int], starts: list[int],
                            answer_at: int | None = None) -> torch.Tensor:
        """Static batching: every column written for every row; answered at ``answer_at`` (default: the last)."""
        device = self._check_ready(input_ids)
        batch, length = input_ids.shape
        assert batch == self.batch_size, f"static batching runs the compiled batch of {self.batch_size}, got {batch}"
        assert len(cache_ids) == length, f"cache_ids {len(cache_ids)} for {length} input columns"
        for col in cache_ids:
            self._check_position(col)
        for b in range(batch):
            for j, col in enumerate(cache_ids):
                device.write(b, col, int(input_ids[b, j]))
        last = cache_ids[-1] if answer_at is None else answer_at
        return torch.stack([device.logits(b, self._first(starts[b]), last, self._token_window(b, last))
                            for b in range(batch)])


def save_presharded(model: CompiledModel, directory: str) -> None:
    """``save(dir, sharded_weights=True)`` (1ade6d7 base.py): weights + config.json saying presharded."""
    assert model.neuron_config.on_device_embedding, \
        "on_device_embedding must be True to save and load presharded weights"
    hf = model.device.hf if model.device is not None else model._hf_model()
    torch.save({"config": model.config.to_dict(), "state_dict": hf.state_dict()},
               os.path.join(directory, PRESHARDED_FILE))
    config = model.config.to_dict()
    config["is_presharded_checkpoint"] = True
    with open(os.path.join(directory, "config.json"), "w") as out:
        json.dump(config, out)
