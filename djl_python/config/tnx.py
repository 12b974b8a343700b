"""Transformers-NeuronX properties: compilation, sharding layout, loading.

Mirrors DJL's ``tnx_properties.py`` (v0.28) with its bugs fixed: validators
return their values (``neuron_optimize_level`` is kept, not turned into None),
boolean compiler flags are booleans, and nothing here writes
``NEURON_CC_FLAGS`` or ``NEURON_COMPILE_CACHE_URL``; that is
``djl_python.config.environment``'s single explicit step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from djl_python.config.errors import ConfigError, ConfigProblem, FieldConflict
from djl_python.config.fields import Bool, LongDtype, OptBool, OptPositiveInt, OptStr, PositiveInt, choice

_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")


def parse_int_list(value: Any) -> Any:
    """``"512, 256"`` -> ``[256, 512]``: positive, de-duplicated, ascending."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        if not text:
            return None
        items = [part.strip() for part in text.split(",")]
        if not all(item.isdigit() for item in items):
            raise ValueError("must be a comma-separated list of positive integers, e.g. 256,512")
        value = [int(item) for item in items]
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, int) and v < 1 for v in value):
            raise ValueError("must be a comma-separated list of positive integers, e.g. 256,512")
        if all(isinstance(v, int) for v in value):
            return sorted(set(value))
    return value


def check_graph_location(value: str | None) -> str | None:
    """``s3://bucket[/key]`` or a local directory path. Existence is checked
    when the artifacts are resolved, not here (validators stay pure)."""
    if value is None:
        return None
    if value.lower().startswith("s3://"):
        if not _S3_URL.match(value):
            raise ValueError("must be s3://bucket/key with a valid S3 bucket name, or a local directory")
        return value
    if "://" in value:
        raise ValueError("must be an s3:// URL or a local directory (other URL schemes are not supported)")
    return value


GraphLocation = Annotated[OptStr, AfterValidator(check_graph_location)]
ModelLoader = Literal["tnx", "optimum", "vllm"]
PartitionSchema = Literal["legacy", "optimum", "safetensors", "compile_only"]
# Values each option takes (aws-neuron/transformers-neuronx config.py docstrings, 8b01968..1ade6d7:
# attention/collectives "To be selected from [HSB, BSH]"; the cache defaults to SBH, BSH being the
# continuous-batching alternative checked in module.py _sanity_check).
Layout = Literal["BSH", "HSB"]
CacheLayout = Literal["SBH", "BSH"]
GroupQueryAttention = Literal["shard-over-heads", "shard-over-batch", "replicated-heads", "all-gather-heads"]
RollingBatchStrategy = Literal["continuous_batching", "naive_rolling_batch"]


class TnxProperties(BaseModel):
    """Transformers-NeuronX options. See docs/configuration.md."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # --- shapes the model is compiled for
    n_positions: OptPositiveInt = Field(
        None, description="Total sequence length (prompt + generated); unset: backend default from the model config."
    )
    context_length_estimate: Annotated[list[int] | None, BeforeValidator(parse_int_list)] = Field(
        None, description="Prefill buckets as a comma list (`256,512`); each <= `n_positions`."
    )
    rolling_batch_strategy: choice(RollingBatchStrategy, optional=True) = Field(
        None,
        description="`continuous_batching` or `naive_rolling_batch`; unset: continuous for llama/mistral "
        "with `max_rolling_batch_size` > 1, else naive.",
    )

    # --- weights
    quantize: choice(Literal["static_int8"], optional=True) = Field(
        None, description="`static_int8`: int8 weight quantization (`load_in_8bit=true` is accepted as a synonym)."
    )
    load_split_model: OptBool = Field(None, description="Load an already split (partitioned) checkpoint.")
    low_cpu_mem_usage: Bool = Field(False, description="Accepted for DJL compatibility; no effect here (a warning says so when set).")
    task: OptStr = Field(None, description="Model task; only `text-generation` is served (another value warns at load).")
    unroll: OptStr = Field(None, description="Transformers-NeuronX `unroll` (layers unrolled in the graph).")

    # --- compiler
    neuron_optimize_level: Annotated[int | None, Field(ge=1, le=3)] = Field(
        None, description="Neuron compiler optimisation level 1, 2 or 3 (adds `-O<n>` to `NEURON_CC_FLAGS`)."
    )
    enable_mixed_precision_accumulation: Bool = Field(
        False, description="Adds `--enable-mixed-precision-accumulation` to `NEURON_CC_FLAGS` (e.g. Llama-70B)."
    )
    enable_saturate_infinity: Bool = Field(False, description="Adds `--enable-saturate-infinity` to `NEURON_CC_FLAGS`.")
    compiled_graph_path: GraphLocation = Field(
        None, description="Neff cache: `s3://bucket/key` or a local directory; sets `NEURON_COMPILE_CACHE_URL`."
    )
    all_reduce_dtype: LongDtype = Field(None, description="All-reduce dtype: `float32`, `float16` or `bfloat16`.")
    cast_logits_dtype: LongDtype = Field(None, description="Logits dtype: `float32`, `float16` or `bfloat16`.")

    # --- sharding layout
    group_query_attention: choice(GroupQueryAttention, optional=True) = Field(
        None, description="GQA sharding: `shard-over-heads`, `shard-over-batch`, `replicated-heads`, `all-gather-heads`."
    )
    fuse_qkv: OptBool = Field(None, description="Fuse the Q, K and V projections into one matmul.")
    attention_layout: choice(Layout, optional=True) = Field(None, description="Attention layout: `HSB` (default) or `BSH`.")
    collectives_layout: choice(Layout, optional=True) = Field(None, description="Collectives layout: `HSB` (default) or `BSH`.")
    cache_layout: choice(CacheLayout, optional=True) = Field(
        None, description="KV-cache layout: `SBH` (default) or `BSH` (continuous batching with one context bucket only)."
    )
    on_device_embedding: OptBool = Field(
        None, description="Keep the token embedding on the NeuronCores (`NeuronConfig.on_device_embedding`, TNX 0.9+). "
        "Unset: on for a DJL-partitioned folder (presharded weights in `compiled/`), as LMI's smart default sets it "
        "for a config.json with a `neuron` block; off otherwise.")
    on_device_embedding_config: OptStr = Field(
        None, description="LMI 0.28-0.29's key: a JSON file. A non-empty file turns `on_device_embedding` on, as "
        "LMI 0.28-0.29 passed the file's object as that flag; only its `on_device_embedding` key is read, other "
        "keys warn. Prefer `on_device_embedding`.")
    on_device_generation: OptStr = Field(
        None, description="LMI's on-device sampling settings (a JSON file). A file holding an empty object does nothing "
        "(as in LMI); any setting is refused at load: on-device generation returns token ids, and this handler samples "
        "on the host from the logits (LMI's transformers-neuronx loader fails on it too).")

    # --- graph shaping (LMI 0.30+): passed to NeuronConfig only when true, as LMI's transformers-neuronx loader does
    fuse_mlp: OptBool = Field(None, description="Fuse the MLP's gate and up projections (`NeuronConfig.fuse_mlp`, TNX 0.12+).")
    fused_rmsnorm_qkv: OptBool = Field(
        None, description="Fuse RMSNorm into the QKV matmul (`NeuronConfig.fused_rmsnorm_qkv`, TNX 0.12+; TNX ignores "
        "it unless `fuse_qkv`, `attention_layout=BSH` and `group_query_attention=replicated-heads`).")
    qkv_tiling: OptBool = Field(None, description="Tile the fused QKV weight (`NeuronConfig.qkv_tiling`, TNX 0.11+; needs `fuse_qkv`).")
    weight_tiling: OptBool = Field(None, description="Tile the MLP weights (`NeuronConfig.weight_tiling`, TNX 0.11+).")
    shard_over_sequence: OptBool = Field(
        None, description="Flash decoding: shard the KV cache over the sequence (`NeuronConfig.shard_over_sequence`, "
        "TNX 0.11+; not with `cache_layout=BSH`).")
    compilation_worker_count: OptPositiveInt = Field(
        None, description="Parallel compiler processes (`NeuronConfig.compilation_worker_count`, TNX 0.13+; earlier "
        "releases compile every graph at once and a warning says so). Does not change the graphs.")
    sequence_parallel: OptBool = Field(
        None, description="LMI's vLLM loader only; no effect here, as in LMI's transformers-neuronx loader (a warning "
        "says so), so that graphs LMI compiled still match.")
    sequence_parallel_norm_threshold: OptPositiveInt = Field(
        None, description="LMI's vLLM loader only; no effect here (a warning says so).")
    mlp_out_weight_transpose: OptBool = Field(None, description="LMI's vLLM loader only; no effect here (a warning says so).")
    multi_node: OptBool = Field(None, description="LMI's vLLM loader only; no effect here (a warning says so).")
    neuron_cc_pipeline_factor: OptPositiveInt = Field(
        None, description="LMI's vLLM loader only; no effect here (a warning says so).")
    neuron_quant: OptBool = Field(
        None, description="LMI's vLLM loader only; no effect here (a warning says so). Use `quantize=static_int8`.")

    # --- loading and ahead-of-time partitioning
    model_loader: choice(ModelLoader) = Field(
        "tnx", description="`tnx` or `optimum`; `partition_schema=optimum` alone implies `optimum`. `vllm` is accepted "
        "for DJL compatibility, warns at load and uses `tnx`."
    )
    partition_schema: choice(PartitionSchema, optional=True) = Field(
        None, description="`optimum` implies `model_loader=optimum`; `legacy`, `safetensors` and `compile_only` are "
        "accepted for DJL compatibility and warn at load (djl-partition always writes the optimum layout)."
    )
    save_mp_checkpoint_path: OptStr = Field(None, description="Output folder for ahead-of-time partitioning.")

    # --- speculative decoding: Neuron as LMI 0.28 (Llama, one sequence, TNX 0.11+); PyTorch, any architecture
    speculative_draft_model: OptStr = Field(
        None, description="Draft model (HF id, s3:// url or folder) for speculative decoding; greedy requests take "
        "up to `speculative_length` tokens per step. Neuron, as LMI 0.28: a Llama target, "
        "`max_rolling_batch_size=1`, transformers-neuronx 0.11+. PyTorch: any architecture with the target's "
        "vocabulary (the same logits width, refused otherwise; a warning at load where its tokenizer gives a "
        "shared token another id), loaded beside it with its slots, `n_positions` and `dtype`; used while one "
        "greedy request runs; output equals plain greedy decoding.")
    speculative_length: PositiveInt = Field(5, description="Tokens the target scores per speculative step (the "
                                                           "draft, or the n-gram lookup, proposes one fewer).")
    speculative_method: choice(Literal["ngram"], optional=True) = Field(  # type: ignore[valid-type]
        None, description="`ngram`: speculative decoding on the PyTorch backend with prompt-lookup "
        "proposals, as vLLM's `ngram` method: the tokens that followed the latest earlier occurrence of the last "
        "2-4 tokens, scored in one forward. Greedy requests while one sequence runs; output equals plain greedy "
        "decoding; pays where the output repeats its input (code edits, quoting, summaries). Neuron: warns, no "
        "effect (use `speculative_draft_model`).")
    draft_model_tp_size: OptPositiveInt = Field(None, description="The draft's tensor-parallel degree (default: the target's).")
    draft_model_compiled_path: GraphLocation = Field(None, description="The draft's saved graphs (a folder with NEFFs).")

    @model_validator(mode="after")
    def _speculation_scores_two_tokens(self) -> "TnxProperties":
        if self.speculative_method == "ngram" and self.speculative_draft_model:
            raise ValueError("speculative_method=ngram and speculative_draft_model both set: one step takes the "
                             "proposals of one of them; unset one")
        method = "speculative_method=ngram" if self.speculative_method == "ngram" else \
            "speculative_draft_model" if self.speculative_draft_model else None
        if method and self.speculative_length < 2:
            raise ValueError(f"{method} needs speculative_length >= 2 (the tokens one step scores: "
                             f"the last one and at least one proposed), got {self.speculative_length}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_loader(cls, data: Any) -> Any:
        """A schema alone implies the loader: ``optimum`` -> optimum, others -> tnx."""
        if not isinstance(data, dict) or str(data.get("model_loader") or "").strip():
            return data
        schema = str(data.get("partition_schema") or "").strip().lower()
        return {**data, "model_loader": "optimum" if schema == "optimum" else "tnx"}

    @model_validator(mode="after")
    def _check_tnx_rules(self) -> TnxProperties:
        if self.n_positions is not None and self.context_length_estimate:
            too_long = [n for n in self.context_length_estimate if n > self.n_positions]
            if too_long:
                raise FieldConflict(
                    ("context_length_estimate", "n_positions"),
                    "{context_length_estimate} has buckets {bad} longer than {n_positions}={n}",
                    bad=too_long,
                    n=self.n_positions,
                )
        if self.cache_layout == "BSH" and self.context_length_estimate and len(self.context_length_estimate) > 1:
            # transformers-neuronx module.py _sanity_check (0623de2 on): "BSH cache layout does not
            # support multi-bucketing"; the continuous-batching requirement is checked with the strategy.
            raise FieldConflict(
                ("cache_layout", "context_length_estimate"),
                "{cache_layout}=BSH takes one context bucket, got {context_length_estimate}={buckets}",
                buckets=self.context_length_estimate,
            )
        if self.qkv_tiling and not self.fuse_qkv:
            # transformers-neuronx asserts it (c8d6bdc config.py:204-208, 1ade6d7 config.py:291-295).
            raise FieldConflict(("qkv_tiling", "fuse_qkv"), "{qkv_tiling}=true needs {fuse_qkv}=true")
        if self.shard_over_sequence and self.cache_layout == "BSH":
            # 1ade6d7 config.py:353-356 asserts the SBH cache layout for flash decoding.
            raise FieldConflict(("shard_over_sequence", "cache_layout"),
                                "{shard_over_sequence}=true needs the SBH cache layout, not {cache_layout}=BSH")
        schema = self.partition_schema
        if self.model_loader == "tnx" and schema == "optimum":
            raise FieldConflict(
                ("model_loader", "partition_schema"),
                "{model_loader}=tnx cannot write {partition_schema}=optimum; use model_loader=optimum",
            )
        if self.model_loader == "optimum" and schema not in (None, "optimum"):
            raise FieldConflict(
                ("model_loader", "partition_schema"),
                "{model_loader}=optimum only writes {partition_schema}=optimum (got {schema})",
                schema=schema,
            )
        if self.model_loader == "vllm" and self.save_mp_checkpoint_path:
            raise FieldConflict(
                ("model_loader", "save_mp_checkpoint_path"),
                "{save_mp_checkpoint_path} (ahead-of-time partitioning) is not available with {model_loader}=vllm",
            )
        return self

    @property
    def load_in_8bit(self) -> bool:
        """Int8 weights, derived from ``quantize``."""
        return self.quantize == "static_int8"


def load_on_device_embedding_config(path: str | None, key: str = "option.on_device_embedding_config") -> dict | None:
    """Read the JSON object that ``on_device_embedding_config`` points to.

    Raises ``ConfigError`` naming ``key`` when the file is missing, is not
    JSON, or does not hold an object.
    """
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([ConfigProblem(key, path, f"cannot read the file: {exc.strerror or exc}")]) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError([ConfigProblem(key, path, f"is not valid JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(key, path, "must contain a JSON object")])
    return data
