"""The PyTorch backend (CPU and CUDA): any Hugging Face causal LM behind the slot interface.

Mirrors transformers-neuronx continuous batching (``seq_ids`` = slots): a preallocated
KV row per sequence, per-row positions and masks, so requests join and leave without
touching other rows. Two forwards run on those rows:

* native (:mod:`.native`): llama, mistral (SmolLM2), qwen2, gpt_neox, gptj, gpt2, gpt_bigcode, opt
  and bloom mapped onto one layer shape (:mod:`.native.architectures`), with fused weights,
  precomputed rotary tables and attention reading the rows in place;
* Hugging Face (:mod:`.hf_forward`): the model's own forward with a row cache and per-row
  masks; the fallback for every other architecture and config the native forward refuses (the
  reason is in the backend's info), or for any with ``native=False``.

Both do the same things per call:

* prefill: the native forward packs the prompts (every matmul runs once on all their
  tokens, attention per prompt); the Hugging Face forward right-pads prompts of similar
  length to the longest of their group and runs each group (:func:`.cpu_policy.prefill_groups`:
  on CPU padding costs as much as real tokens, so a prompt only joins a group while the
  padding it adds stays small; on CUDA one group), causal attention alone keeping real
  tokens away from the padding (padding only follows). Only each prompt's last position
  reaches the LM head. PyTorch has no compiled shapes, so nothing is padded to a prefill
  bucket: the buckets only bound the prompt length, as Neuron's context buckets do.
* decode: one token per row at per-row positions; attention reads the first ``width``
  columns, the longest row rounded up to :data:`KV_WIDTH_ALIGN` (the native forward on a
  CPU runs the kernel of :mod:`.native.cpu_kernels` instead, each row read to its own
  position).
* a step (``decode_and_prefill``): the native forward runs the decode rows and the joining
  prompts in one forward (:meth:`.native.decoder.NativeDecoder.step`); the Hugging Face forward
  makes the two calls.
* rows: a slot's KV row is not its id but a row from :class:`.slot_rows.SlotRows`, which
  keeps occupied rows packed at ``0..n-1``, so decoding every running request slices its
  rows instead of gathering them (finished requests leave holes in the slot ids).
* continuing a row: the prefix cache's rows follow the slots' rows (``max_slots + r``); a
  cached prefix is copied into a prompt's row and the prompt computed from its end (the
  attention of a prompt token reads its row from column 0). A prompt's later chunk (chunked
  prefill) continues its row the same way, and ``verify`` is the same forward over a running
  slot's next tokens, returning every position's logits. The native forward packs these with
  the rest of the step; the Hugging Face forward runs each as an extension of its row
  (:meth:`.hf_forward.HFRows.extend`).

Hot-loop hygiene: one small host tensor per call (rows, tokens, positions and, when the
rows are out of slot order, the permutation back, packed together, one copy to the
device), cache updates in place, no host/device sync (the logits stay on the device for
the engine to sample).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from djl_python.backends import model_defaults as defaults
from djl_python.backends.pytorch.attention_masks import mask_mode_for
from djl_python.backends.base import Backend, BackendInfo, BackendLimits
from djl_python.backends.pytorch.cpu_policy import CPU_PREFILL_BUDGET, bound_shape_caches, cpu_threads
from djl_python.backends.pytorch.hf_forward import HFRows
from djl_python.backends.pytorch.native.architectures import native_support
from djl_python.backends.pytorch.native.decoder import NativeDecoder
from djl_python.backends.pytorch.native.decoder import DecodeRows
from djl_python.backends.pytorch.native.cpu_kernels import load as load_cpu_kernels
from djl_python.backends.pytorch.slot_rows import RowMove, SlotRows, first_if_contiguous

logger = logging.getLogger(__name__)

KV_WIDTH_ALIGN = 64  # decode attends a multiple of this many columns: bounded work, few shapes
_ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # both honour custom 4D masks; flash kernels do not


class RowForward(Protocol):
    """A model's forward on KV rows (:class:`.hf_forward.HFRows`, :class:`.native.decoder.NativeDecoder`).

    ``prefill`` takes host-side row indices (any order, distinct) and their prompts and
    returns the logits at each prompt's last position, in the order given. ``decode`` takes
    ascending row indices on the device, ``first`` being ``rows[0]`` when they are
    consecutive (slice, not gather). Both return float32 logits ``[n, vocab]``. ``step`` is
    :meth:`.native.decoder.NativeDecoder.step`: a decode and prompts continued from ``starts``
    (a cached prefix, earlier chunks, speculated tokens), in one forward or two.
    """

    def prefill(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor: ...

    def step(self, decode: DecodeRows | None, prefill: tuple[Sequence[int], Sequence[Sequence[int]]] | None,
             starts: Sequence[int] | None = None, every_position: bool = False,
             ) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...

    def decode(self, rows: torch.Tensor, first: int | None, tokens: torch.Tensor, positions: torch.Tensor,
               width: int) -> torch.Tensor: ...

    def move_row(self, dst: int, src: int, length: int) -> None: ...

    def nbytes(self) -> int: ...


class PyTorchBackend(Backend):
    """A Hugging Face causal LM with ``max_slots`` KV-cache rows. Build it with :meth:`load`."""

    def __init__(
        self, model: torch.nn.Module, limits: BackendLimits, info: BackendInfo, native: bool = True,
        cpu_kernels: bool = True, layer_stack: bool = True,
    ) -> None:
        self.model, self.limits, self.info = model, limits, info
        self._device = next(model.parameters()).device
        self._embed_rows = model.get_input_embeddings().num_embeddings
        self._active = [False] * limits.max_slots
        self._rows = SlotRows(limits.max_slots)
        self._lengths = [0] * limits.max_slots  # per row: columns written since its prefill
        self._cache_lengths = [0] * limits.prefix_cache_rows  # per cache row: positions saved there
        with torch.inference_mode():
            reason = native_support(model.config) if native else "native=False"
            self._forward: RowForward
            own_bytes = 0
            if reason is None:
                kernels, how = load_cpu_kernels() if cpu_kernels and self._device.type == "cpu" \
                    else (None, "not used")
                # The prefix cache's rows follow the slots' rows.
                native_forward = NativeDecoder.from_hf(model, limits.max_slots + limits.prefix_cache_rows,
                                                     limits.n_positions, kernels=kernels, stack=layer_stack)
                self._forward = native_forward
                info.extra["forward"] = "native"
                info.extra["native_ops"] = native_forward.ops
                info.extra["layer_stack"] = native_forward.stack
                # Packed: the Hugging Face decoder's linears were released; self.model can no
                # longer run a forward (see .native.linear).
                info.extra["weights_layout"] = native_forward.layout
                weights = native_forward.layout
                if kernels is not None and "panels" in weights:
                    info.extra["panel_matmul_bits"] = kernels.vector_bits  # 512: AVX-512, 256: AVX2
                    weights += f" ({kernels.vector_bits}-bit matmul)"
                logger.info("native forward ops: %s (CPU kernels: %s); weights: %s; decoder layers: %s",
                            native_forward.ops, how, weights, native_forward.stack)
                own_bytes = native_forward.own_bytes()
            else:
                self._forward = HFRows(model, limits.max_slots + limits.prefix_cache_rows, limits.n_positions)
                info.extra["forward"] = "hf"
                info.extra["native_skipped"] = reason
            logger.info("pytorch backend: %s forward for %s%s", info.extra["forward"], model.config.model_type,
                        "" if reason is None else f" (native: {reason})")
            self.prefill([0], [[0]])  # allocates every layer's K/V rows now, not on the first request
            self.release(0)
        info.extra["kv_cache_bytes"] = self._forward.nbytes()
        info.extra["weights_bytes"] = own_bytes + sum(p.nbytes for p in model.parameters())

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        max_slots: int,
        n_positions: int | None = None,
        dtype: str | None = None,
        device: str = "cpu",
        trust_remote_code: bool = False,
        prefill_buckets: Sequence[int] | None = None,
        attn_implementation: str | None = None,
        native: bool = True,
        cpu_kernels: bool = True,
        layer_stack: bool = True,
        prefix_cache_rows: int = 0,
    ) -> PyTorchBackend:
        """Load ``model_dir`` (a local Hugging Face checkpoint) with ``max_slots`` slots.

        Defaults: ``n_positions`` = min(the model's position limit, 2048); ``dtype`` fp32 on
        CPU, fp16 on CUDA; ``prefill_buckets`` 128, 256, ... up to ``n_positions``;
        ``attn_implementation`` sdpa where the architecture supports it, else eager (for the
        Hugging Face forward); ``native`` runs the architectures of :mod:`.native.architectures` on
        :mod:`.native` (``False`` forces the Hugging Face forward); ``cpu_kernels`` lets that forward use the CPU kernels
        of :mod:`.native.cpu_kernels` where they build (``False``: torch ops, SDPA and oneDNN's
        matmul; no serving option sets it, tests and benchmarks do); ``layer_stack`` lets that forward
        run a step's decoder layers as one call into those kernels where every weight is in their
        panel layout (:mod:`.native.layer_stack`; ``False``: the Python layer loop, the same bits;
        tests and benchmarks set it); ``prefix_cache_rows`` KV rows
        for cached prefixes (``Backend``'s contract).
        Raises ``ValueError`` naming the option when one is out of range.
        """
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}")
        if attn_implementation is not None and attn_implementation not in _ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {_ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
        torch_device = _resolve_device(device)
        if torch_device.type == "cpu":
            bound_shape_caches()  # where select.py did not already: a backend loaded directly
            torch.set_num_threads(cpu_threads())
        torch_dtype = defaults.resolve_dtype(dtype, torch_device)
        bf16_flags = defaults.cpu_bf16_flags() if torch_device.type == "cpu" else ()
        if dtype is None and bf16_flags:
            # fp32 stays the default: it is the dtype whose greedy tokens equal generate()'s.
            logger.info("this CPU computes bf16 natively (%s): option.dtype=bf16 decodes faster than the fp32 "
                        "default", ",".join(bf16_flags))
        if torch_device.type == "cpu" and torch_dtype in (torch.bfloat16, torch.float16) and not bf16_flags:
            # Accepted, but worth saying what it costs: without bf16 instructions a half GEMM is
            # emulated, slower than fp32 at a batch (figures in docs/performance.md).
            # The native forward widens its weights to fp32 for oneDNN instead (.native.linear).
            logger.warning("option.dtype=%s on a CPU without bf16 instructions (none of %s): the native "
                           "forward holds its matmul weights widened to fp32 (fp32 speed and weight memory, "
                           "%s activations and KV cache); the Hugging Face forward's matmuls run emulated, "
                           "slower than fp32. option.dtype=fp32 is exact against generate()",
                           defaults.dtype_name(torch_dtype), ",".join(defaults.BF16_CPU_FLAGS),
                           defaults.dtype_name(torch_dtype))
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
        n_pos = defaults.resolve_n_positions(config, n_positions)
        buckets = defaults.resolve_buckets(n_pos, prefill_buckets)
        kwargs: dict[str, object] = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if torch_device.type == "cuda":  # load straight onto the GPU, not via a CPU copy
            kwargs["device_map"] = str(torch_device)
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code, **kwargs
        )
        model.to(torch_device).eval()
        attn = model.config._attn_implementation
        if attn not in _ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attention implementation {attn!r} cannot take per-slot masks; use sdpa or eager")
        if prefix_cache_rows < 0:
            raise ValueError(f"prefix_cache_rows must be >= 0, got {prefix_cache_rows}")
        limits = BackendLimits(
            max_slots=max_slots,
            prefix_cache_rows=prefix_cache_rows,
            can_verify=True,
            can_chunk_prefill=True,
            n_positions=n_pos,
            prefill_buckets=buckets,
            vocab_size=_logits_width(model),
            eos_token_ids=defaults.eos_token_ids(model.config, model.generation_config),
            # The native forward packs prompts; the HF forward groups them by length on CPU (padding
            # bounded by CPU_PREFILL_MERGE_PAD) and pads all to the longest on CUDA, where padding is cheap.
            padded_prefill=False,
            prefill_budget=CPU_PREFILL_BUDGET if torch_device.type == "cpu" else None,
        )
        info = BackendInfo(
            name="pytorch",
            device=str(torch_device),
            model_type=model.config.model_type,
            dtype=defaults.dtype_name(torch_dtype),
            extra={"attn_implementation": attn, "mask_mode": mask_mode_for(model.config.model_type),
                   "cpu_bf16_flags": list(bf16_flags)},
        )
        return cls(model, limits, info, native=native, cpu_kernels=cpu_kernels, layer_stack=layer_stack)

    @torch.inference_mode()
    def prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]],
                cached: Sequence[tuple[int, int] | None] | None = None,
                starts: Sequence[int] | None = None) -> torch.Tensor:
        rows = self._prefill_rows(slot_ids, prompts, cached, starts)
        first = self._first_columns(rows, cached, starts)
        if first is None:
            logits = self._forward.prefill(rows, prompts)
        else:
            logits = self._forward.step(None, (rows, prompts), first)[1]
        self._prefilled(slot_ids, rows, prompts)
        return logits

    @torch.inference_mode()
    def save_prefix(self, slot_id: int, cache_row: int, length: int) -> None:
        """Copy the slot's first ``length`` positions into cache row ``cache_row`` (``Backend``)."""
        if not 0 <= cache_row < self.limits.prefix_cache_rows:
            raise ValueError(f"cache_row must lie in [0, {self.limits.prefix_cache_rows}), got {cache_row}")
        if not (0 <= slot_id < self.limits.max_slots and self._active[slot_id]):
            raise ValueError(f"save_prefix on slot {slot_id}, which holds no sequence")
        row = self._rows.row(slot_id)
        if not 0 < length <= self._lengths[row]:
            raise ValueError(f"save_prefix of {length} positions; slot {slot_id} holds {self._lengths[row]}")
        self._forward.move_row(self.limits.max_slots + cache_row, row, length)
        self._cache_lengths[cache_row] = length

    @torch.inference_mode()
    def verify(self, slot_id: int, tokens: Sequence[int], position: int) -> torch.Tensor:
        """Feed ``tokens`` to the slot at ``position ..`` in one forward (``Backend``'s contract)."""
        if not (0 <= slot_id < self.limits.max_slots and self._active[slot_id]):
            raise ValueError(f"verify on slot {slot_id}, which holds no sequence")
        if not tokens or position < 0 or position + len(tokens) > self.limits.n_positions:
            raise ValueError(f"verify of {len(tokens)} tokens at position {position}: they must fit in "
                             f"n_positions {self.limits.n_positions}")
        self._check_tokens(tokens, "tokens")
        row = self._rows.row(slot_id)
        # The step takes whole prompts and the first position to compute: the leading ids are not read.
        padded = [0] * position + list(tokens)
        logits = self._forward.step(None, ([row], [padded]), [position], every_position=True)[1]
        self._lengths[row] = max(self._lengths[row], position + len(tokens))
        return logits

    def _check_cached(self, prompts: Sequence[Sequence[int]], cached: Sequence[tuple[int, int] | None] | None) -> None:
        if cached is None:
            return
        if len(cached) != len(prompts):
            raise ValueError(f"prefill got {len(prompts)} prompts but {len(cached)} cached prefixes")
        for i, (prompt, entry) in enumerate(zip(prompts, cached)):
            if entry is None:
                continue
            cache_row, n = entry
            if not 0 <= cache_row < self.limits.prefix_cache_rows:
                raise ValueError(f"cached[{i}] names cache row {cache_row}; there are {self.limits.prefix_cache_rows}")
            if not 0 < n < len(prompt) or n > self._cache_lengths[cache_row]:
                raise ValueError(f"cached[{i}] reuses {n} positions of a {len(prompt)}-token prompt; cache row "
                                 f"{cache_row} holds {self._cache_lengths[cache_row]}")

    def _check_starts(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]],
                      cached: Sequence[tuple[int, int] | None] | None, starts: Sequence[int] | None) -> None:
        """Each continued prompt's slot holds at least its first ``starts[i]`` positions (``Backend``'s contract)."""
        if starts is None:
            return
        if len(starts) != len(prompts):
            raise ValueError(f"prefill got {len(prompts)} prompts but {len(starts)} starts")
        for i, (slot, prompt, start) in enumerate(zip(slot_ids, prompts, starts)):
            if start == 0:
                continue
            held = self._lengths[self._rows.row(slot)] if self._active[slot] else 0
            if start > held or not start < len(prompt) or (cached is not None and cached[i] is not None):
                raise ValueError(f"starts[{i}] continues a {len(prompt)}-token prompt from {start}; slot {slot} "
                                 f"holds {held} positions" + ("" if cached is None or cached[i] is None
                                                              else " and a cached prefix was given too"))

    def _first_columns(self, rows: Sequence[int], cached: Sequence[tuple[int, int] | None] | None,
                       starts: Sequence[int] | None) -> list[int] | None:
        """Copy each prompt's cached prefix (checked by :meth:`_check_cached`) into its row; return each
        prompt's first position to compute (its cached prefix or earlier chunks), or None when all are 0."""
        first = list(starts) if starts is not None else [0] * len(rows)
        if cached is not None:
            for i, (row, entry) in enumerate(zip(rows, cached)):
                if entry is not None:
                    self._forward.move_row(row, self.limits.max_slots + entry[0], entry[1])
                    first[i] = entry[1]
        return first if any(first) else None

    @torch.inference_mode()
    def decode(
        self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]
    ) -> torch.Tensor:
        call, restore = self._decode_rows(slot_ids, last_tokens, positions)
        logits = self._forward.decode(call.rows, call.first, call.tokens, call.positions, call.width)
        return logits.index_select(0, restore) if restore is not None else logits

    @torch.inference_mode()
    def decode_and_prefill(
        self, decode_slots: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int],
        prefill_slots: Sequence[int], prompts: Sequence[Sequence[int]],
        cached: Sequence[tuple[int, int] | None] | None = None, starts: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Both parts in one forward where the native forward runs and both are given (every
        matmul on the decode tokens and the prompts together; docs/performance.md); else the
        two calls. The same checks as :meth:`decode` and :meth:`prefill`, and a slot may not be
        in both. ``cached``: each prompt's cached prefix; ``starts``: its earlier chunks
        (``Backend``'s contract)."""
        if not decode_slots or not prefill_slots:
            decoded = self.decode(decode_slots, last_tokens, positions) if decode_slots else None
            prefilled = self.prefill(prefill_slots, prompts, cached, starts) if prefill_slots else None
            return decoded, prefilled
        both = sorted(set(decode_slots) & set(prefill_slots))
        if both:
            raise ValueError(f"slots both decoded and prefilled in one step: {both}")
        self._check_prefill(prefill_slots, prompts, cached, starts)  # both parts checked before a row changes
        call, restore = self._decode_rows(decode_slots, last_tokens, positions)
        rows = [self._rows.assign(slot) for slot in prefill_slots]
        decoded, prefilled = self._forward.step(call, (rows, prompts), self._first_columns(rows, cached, starts))
        self._prefilled(prefill_slots, rows, prompts)
        if restore is not None and decoded is not None:
            decoded = decoded.index_select(0, restore)
        return decoded, prefilled

    def _prefill_rows(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]],
                      cached: Sequence[tuple[int, int] | None] | None, starts: Sequence[int] | None) -> list[int]:
        """Check a prefill's arguments; assign and return each slot's row."""
        self._check_prefill(slot_ids, prompts, cached, starts)
        return [self._rows.assign(slot) for slot in slot_ids]

    def _check_prefill(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]],
                       cached: Sequence[tuple[int, int] | None] | None, starts: Sequence[int] | None) -> None:
        self._check_prompts(slot_ids, prompts)
        self._check_cached(prompts, cached)
        self._check_starts(slot_ids, prompts, cached, starts)

    def _check_prompts(self, slot_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> None:
        self._check_slots(slot_ids, "slot_ids")
        if len(prompts) != len(slot_ids):
            raise ValueError(f"prefill got {len(slot_ids)} slot_ids but {len(prompts)} prompts")
        for i, prompt in enumerate(prompts):
            if not 0 < len(prompt) <= self.limits.max_prompt_len:
                raise ValueError(
                    f"prompts[{i}] has {len(prompt)} tokens; need 1..{self.limits.max_prompt_len}"
                )
            self._check_tokens(prompt, f"prompts[{i}]")

    def _prefilled(self, slot_ids: Sequence[int], rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> None:
        for slot, row, prompt in zip(slot_ids, rows, prompts):
            self._active[slot] = True
            self._lengths[row] = len(prompt)

    def _decode_rows(
        self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]
    ) -> tuple[DecodeRows, torch.Tensor | None]:
        """Check a decode's arguments; return the call in row order (device tensors) and, when
        that differs from slot order, the permutation that puts its logits back in slot order.
        Records each row's new length (the forward that follows writes it)."""
        self._check_slots(slot_ids, "slot_ids")
        n = len(slot_ids)
        if len(last_tokens) != n or len(positions) != n:
            raise ValueError(f"decode got {n} slot_ids, {len(last_tokens)} last_tokens, {len(positions)} positions")
        inactive = [s for s in slot_ids if not self._active[s]]
        if inactive:
            raise ValueError(f"decode on slots never prefilled or already released: {inactive}")
        self._check_tokens(last_tokens, "last_tokens")
        longest = max(positions) + 1
        if min(positions) < 0 or longest > self.limits.n_positions:
            raise ValueError(f"positions must lie in [0, {self.limits.n_positions}), got {list(positions)}")
        width = min(-(-longest // KV_WIDTH_ALIGN) * KV_WIDTH_ALIGN, self.limits.n_positions)
        rows = [self._rows.row(slot) for slot in slot_ids]
        restore: list[int] = []
        if any(b < a for a, b in zip(rows, rows[1:])):  # run in row order, answer in slot order
            order = sorted(range(n), key=rows.__getitem__)
            restore = [0] * n
            for rank, i in enumerate(order):
                restore[i] = rank
            rows = [rows[i] for i in order]
            last_tokens = [last_tokens[i] for i in order]
            positions = [positions[i] for i in order]
        packed = torch.tensor([*rows, *last_tokens, *positions, *restore], dtype=torch.long)
        packed = packed.to(self._device, non_blocking=True)
        for row, position in zip(rows, positions):
            self._lengths[row] = position + 1
        call = DecodeRows(packed[:n], first_if_contiguous(rows), packed[n : 2 * n], packed[2 * n : 3 * n], width)
        return call, (packed[3 * n :] if restore else None)

    def release(self, slot_id: int) -> None:
        """Free the slot's row. Its K/V (and mask) columns are left as they are: the next
        prefill into the row overwrites what it uses and decode masks every column beyond a
        row's position; except that the last occupied row moves into it to keep the rows packed."""
        if 0 <= slot_id < self.limits.max_slots:
            self._active[slot_id] = False
            move = self._rows.release(slot_id)
            if move is not None:
                self._move_row(move)

    @torch.inference_mode()
    def _move_row(self, move: RowMove) -> None:
        """Copy the written columns of row ``move.src`` into row ``move.dst``."""
        length = self._lengths[move.src]
        self._forward.move_row(move.dst, move.src, length)
        self._lengths[move.dst] = length

    def close(self) -> None:
        del self._forward
        del self.model
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _check_slots(self, slot_ids: Sequence[int], field: str) -> None:
        if not slot_ids:
            raise ValueError(f"{field} is empty")
        if any(b <= a for a, b in zip(slot_ids, slot_ids[1:])):
            raise ValueError(f"{field} must be distinct and ascending, got {list(slot_ids)}")
        if slot_ids[0] < 0 or slot_ids[-1] >= self.limits.max_slots:
            raise ValueError(f"{field} must lie in [0, {self.limits.max_slots}), got {list(slot_ids)}")

    def _check_tokens(self, tokens: Sequence[int], field: str) -> None:
        # An out-of-range id would crash the embedding (a device-side assert on CUDA).
        if min(tokens) < 0 or max(tokens) >= self._embed_rows:
            raise ValueError(f"{field} holds token ids outside [0, {self._embed_rows})")


def _logits_width(model: torch.nn.Module) -> int:
    head = model.get_output_embeddings()
    return int(getattr(head, "out_features", 0) or model.config.get_text_config().vocab_size)


def _resolve_device(device: str) -> torch.device:
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device: {err}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return resolved
