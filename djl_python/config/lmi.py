"""Common LMI properties: model source, batching, timeouts, output format.

These are the options every LMI engine understands (DJL's
``properties_manager/properties.py``) plus this handler's own serving limits
(``device``, ``max_waiting_requests``, ``max_rolling_batch_prefill_tokens``).
Validators are pure: they return values and never read or write the
environment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from djl_python.config.errors import FieldConflict
from djl_python.config.fields import Bool, ModelDtype, OptPositiveInt, OptStr, PositiveInt, choice

# The LMI output formats (``djl_python.api.lmi.CONTENT_TYPES`` renders each; a test keeps them equal).
OutputFormatterName = Literal["json", "jsonlines", "sse", "json_chat", "jsonlines_chat", "none"]

# rolling_batch values that select another LMI engine. DJL silently coerced
# them to `auto` (and so ran an engine the user did not ask for); we refuse.
OTHER_ENGINES: dict[str, str] = {
    "vllm": "vLLM",
    "lmi-dist": "LMI-Dist",
    "trtllm": "TensorRT-LLM",
    "scheduler": "DJL's seq-scheduler",
}
_ROLLING_BATCH: dict[str, str] = {"auto": "auto", "tnx": "tnx", "disable": "disable", "true": "auto", "false": "disable"}

RollingBatch = Literal["auto", "tnx", "disable"]


def parse_rolling_batch(value: Any) -> Any:
    """``auto|tnx|disable`` (``true`` = auto, ``false`` = disable); other
    engines' names and unknown values are errors, never coerced."""
    if not isinstance(value, str):
        return value
    key = value.strip().lower()
    if key in _ROLLING_BATCH:
        return _ROLLING_BATCH[key]
    if key in OTHER_ENGINES:
        raise ValueError(
            f"{key} selects the {OTHER_ENGINES[key]} engine, which this Transformers-NeuronX handler "
            "does not provide; use auto, tnx or disable"
        )
    raise ValueError("must be one of auto, tnx, disable (also true = auto, false = disable)")


# DJL 0.28's config recommender writes the CUDA GPU count when the user set none
# (djl-serving v0.28.0 LmiConfigRecommender.java:129-138): 0 on inf2 and CPU. Read as the default.
TP_FROM_RECOMMENDER = 0


def parse_tensor_parallel_degree(value: Any) -> Any:
    """A positive integer, or ``max`` (all available cores; resolved later). ``0`` is the
    default, 1 (``TP_FROM_RECOMMENDER``; the load step warns)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "max":
            return "max"
        if not text.isdigit():
            raise ValueError("must be a positive integer or max")
        value = int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        if value == TP_FROM_RECOMMENDER:
            return 1
        if value < 1:
            raise ValueError("must be a positive integer or max")
    return value


def parse_streaming(value: Any) -> Any:
    """Deprecated ``enable_streaming``: ``true|false|huggingface``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text == "huggingface":
            return "huggingface"
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off"}:
            return False
        raise ValueError("must be one of true, false, huggingface")
    return value


TensorParallelDegree = Annotated[Union[int, Literal["max"]], BeforeValidator(parse_tensor_parallel_degree)]
Device = Literal["auto", "neuron", "cpu", "cuda"]


class LmiProperties(BaseModel):
    """Options shared by all LMI engines. See docs/configuration.md."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # --- what DJL itself reads; kept so the whole configuration is inspectable
    engine: OptStr = Field(None, description="DJL engine name (`Python`); read by DJL's front end.")
    entry_point: OptStr = Field(
        None, description="Python entry module (`djl_python.transformers_neuronx`); written `entryPoint`."
    )
    job_queue_size: OptPositiveInt = Field(None, description="DJL front-end job queue size; not used by the handler.")

    # --- model source
    model_id: OptStr = Field(None, description="Hugging Face model id, `s3://` URL or local path of the model.")
    model_dir: OptStr = Field(None, description="Local model folder (set by DJL / `SERVING_LOAD_MODELS`).")
    revision: OptStr = Field(None, description="Hugging Face revision (branch, tag or commit) to download.")
    trust_remote_code: Bool = Field(False, description="Allow the model's own Python modelling/tokenizer files.")

    # --- parallelism and batching
    tensor_parallel_degree: TensorParallelDegree = Field(
        1, description="NeuronCores to shard the model over: a positive integer or `max` (all cores). `0`, which "
        "DJL 0.28's config recommender writes on machines without a CUDA GPU, means the default, with a warning."
    )
    rolling_batch: Annotated[RollingBatch, BeforeValidator(parse_rolling_batch)] = Field(
        "auto",
        description="`auto`/`tnx`: continuous (rolling) batching; `disable`: static batches. "
        "Defaults to `disable` when `batch_size` > 1.",
    )
    max_rolling_batch_size: PositiveInt = Field(32, description="Requests decoded together (KV-cache slots).")
    max_rolling_batch_prefill_tokens: OptPositiveInt = Field(
        None,
        description="Prompt tokens prefilled in one engine step (Neuron counts each prompt's padded bucket, "
        "PyTorch its real tokens). With `enable_chunked_prefill` (PyTorch) a longer prompt is split across "
        "steps; otherwise the first waiting request is admitted whatever its length. Unset: 256 on "
        "PyTorch on a CPU, 512 on a GPU, max(largest bucket, 512) on Neuron. Smaller: a burst's first tokens "
        "sooner and shorter gaps in running streams; larger: fewer steps.",
    )
    batch_size: PositiveInt = Field(1, description="Static batch size; only with `rolling_batch=disable`.")
    max_waiting_requests: PositiveInt = Field(
        256, description="Bounded queue of requests waiting for a slot; more are refused (HTTP 503)."
    )

    # --- numerics and device
    dtype: ModelDtype = Field(
        None, description="`fp32`, `fp16` or `bf16` (also `float32`...); unset/`auto`: fp32 on CPU, fp16 on Neuron/CUDA. "
                    "On a CPU without bf16 instructions the PyTorch backend's native forward holds "
                    "half-precision matmul weights widened to fp32 (fp32 speed and weight memory; activations and "
                    "KV cache stay in `dtype`)."
    )
    device: choice(Device) = Field("auto", description="`auto` (Neuron if present, else CUDA, else CPU), `neuron`, `cpu`, `cuda`.")

    # --- timeouts and output
    predict_timeout: PositiveInt = Field(240, description="Seconds a request may take before it is aborted.")
    model_loading_timeout: PositiveInt = Field(1800, description="Seconds allowed for download, compilation and load.")
    output_formatter: choice(OutputFormatterName, optional=True) = Field(
        None,
        description="Default LMI output format: `json`, `jsonlines`, `sse`, `json_chat`, `jsonlines_chat` or `none`. "
        "DJL's custom formatter (a callable's name) is refused at load: this handler runs no user code.",
    )
    tgi_compat: Bool = Field(False, description="Answer in Text Generation Inference's response schema.")
    enable_streaming: Annotated[bool | Literal["huggingface"] | None, BeforeValidator(parse_streaming)] = Field(
        None, description="Deprecated: `true|false|huggingface`; no effect (requests choose with `\"stream\": true`), "
        "warns at load; `true` still needs rolling batch when `batch_size` > 1."
    )

    # --- accepted for compatibility with DJL's common properties
    waiting_steps: OptPositiveInt = Field(None, description="DJL scheduler setting; accepted and ignored.")
    mpi_mode: Bool = Field(False, description="DJL multi-process mode; accepted and ignored (one process per model).")
    draft_model_id: OptStr = Field(None, description="Speculative decoding draft model; not supported, ignored.")
    spec_length: Annotated[int, Field(ge=0)] = Field(0, description="Speculative decoding length; not supported, ignored.")

    @model_validator(mode="before")
    @classmethod
    def _default_rolling_batch(cls, data: Any) -> Any:
        """An unset ``rolling_batch`` means ``disable`` when a static
        ``batch_size`` > 1 is asked for (DJL's recommender did the same)."""
        if not isinstance(data, dict) or str(data.get("rolling_batch") or "").strip():
            return data
        try:
            batch_size = int(str(data.get("batch_size", "1")).strip())
        except ValueError:
            return data  # the field validator reports it
        if batch_size > 1:
            return {**data, "rolling_batch": "disable"}
        return data

    @model_validator(mode="after")
    def _check_batching(self) -> LmiProperties:
        if self.batch_size > 1 and self.rolling_batch != "disable":
            raise FieldConflict(
                ("batch_size", "rolling_batch"),
                "{batch_size}={bs} cannot be combined with {rolling_batch}={rb}: with rolling batch the "
                "batch is sized by max_rolling_batch_size; set {rolling_batch}=disable for static batches",
                bs=self.batch_size,
                rb=self.rolling_batch,
            )
        if self.enable_streaming and self.batch_size > 1 and self.rolling_batch == "disable":
            raise FieldConflict(
                ("enable_streaming", "batch_size"),
                "{enable_streaming} needs rolling batch; it cannot stream static batches ({batch_size}={bs})",
                bs=self.batch_size,
            )
        return self

    @property
    def model_id_or_path(self) -> str | None:
        """Where the model comes from: ``model_id`` if set, else ``model_dir``."""
        return self.model_id or self.model_dir

    @property
    def rolling_batch_enabled(self) -> bool:
        """Whether requests join and leave a running batch (any ``rolling_batch`` but ``disable``)."""
        return self.rolling_batch != "disable"

    @property
    def slots_key(self) -> str:
        """The option that sizes the batch: ``max_rolling_batch_size`` with rolling batch, else ``batch_size``.
        Every message about the batch size names this key."""
        return "max_rolling_batch_size" if self.rolling_batch_enabled else "batch_size"

    @property
    def max_slots(self) -> int:
        """Sequences served at once (the value of :attr:`slots_key`); the one place this is decided."""
        return self.max_rolling_batch_size if self.rolling_batch_enabled else self.batch_size

    def resolved_tp_degree(self, available_cores: int) -> int:
        """The tensor-parallel degree as a number: ``max`` becomes
        ``available_cores``. An explicit number is returned unchanged; whether
        it fits the hardware is the backend's check."""
        if self.tensor_parallel_degree == "max":
            if available_cores < 1:
                raise ValueError("tensor_parallel_degree=max but no accelerator cores are available")
            return available_cores
        return int(self.tensor_parallel_degree)
