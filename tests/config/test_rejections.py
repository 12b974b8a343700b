"""Every validated option rejects a bad value, naming the key as the user wrote it."""

from __future__ import annotations

import pytest

from tests.config.helpers import parse_error

# (written key, bad raw value, fragment of the explanation)
REJECTED: list[tuple[str, str, str]] = [
    ("job_queue_size", "0", "greater than or equal to 1"),
    ("option.trust_remote_code", "maybe", "boolean"),
    ("option.tensor_parallel_degree", "-2", "positive integer or max"),
    ("option.tensor_parallel_degree", "four", "positive integer or max"),
    ("option.rolling_batch", "fast", "auto, tnx, disable"),
    ("option.rolling_batch", "vllm", "vLLM engine"),
    ("option.rolling_batch", "lmi-dist", "LMI-Dist engine"),
    ("option.rolling_batch", "trtllm", "TensorRT-LLM engine"),
    ("option.rolling_batch", "scheduler", "seq-scheduler engine"),
    ("option.max_rolling_batch_size", "0", "greater than or equal to 1"),
    ("option.max_rolling_batch_size", "eight", "valid integer"),
    ("option.max_rolling_batch_prefill_tokens", "-1", "greater than or equal to 1"),
    ("option.batch_size", "0", "greater than or equal to 1"),
    ("option.max_waiting_requests", "0", "greater than or equal to 1"),
    ("option.max_request_bytes", "0", "greater than or equal to 1"),
    ("option.max_request_bytes", "lots", "number of bytes"),
    ("option.max_unsent_tokens", "0", "greater than or equal to 1"),
    ("option.stream_stall_timeout", "0", "greater than or equal to 1"),
    ("option.max_connections", "-5", "greater than or equal to 1"),
    ("option.header_timeout", "soon", "valid integer"),
    ("option.body_timeout", "0", "greater than or equal to 1"),
    ("option.dtype", "int8", "fp32, fp16, bf16"),
    ("option.device", "tpu", "auto, neuron, cpu, cuda"),
    ("option.predict_timeout", "soon", "valid integer"),
    ("option.model_loading_timeout", "0", "greater than or equal to 1"),
    ("option.tgi_compat", "2", "boolean"),
    ("option.enable_streaming", "sometimes", "true, false, huggingface"),
    ("option.waiting_steps", "0", "greater than or equal to 1"),
    ("option.mpi_mode", "x", "boolean"),
    ("option.spec_length", "-1", "greater than or equal to 0"),
    ("option.n_positions", "0", "greater than or equal to 1"),
    ("option.context_length_estimate", "256,abc", "comma-separated list of positive integers"),
    ("option.context_length_estimate", "0,256", "comma-separated list of positive integers"),
    ("option.rolling_batch_strategy", "greedy", "continuous_batching, naive_rolling_batch"),
    ("option.quantize", "awq", "static_int8"),
    ("option.load_split_model", "x", "boolean"),
    ("option.low_cpu_mem_usage", "x", "boolean"),
    ("option.neuron_optimize_level", "4", "less than or equal to 3"),
    ("option.neuron_optimize_level", "0", "greater than or equal to 1"),
    ("option.enable_mixed_precision_accumulation", "x", "boolean"),
    ("option.enable_saturate_infinity", "x", "boolean"),
    ("option.compiled_graph_path", "gs://bucket/neff", "s3:// URL or a local directory"),
    ("option.compiled_graph_path", "s3://Bad_Bucket/neff", "valid S3 bucket name"),
    ("option.all_reduce_dtype", "int8", "float32, float16, bfloat16"),
    ("option.cast_logits_dtype", "fp8", "float32, float16, bfloat16"),
    ("option.group_query_attention", "shard", "shard-over-heads, shard-over-batch"),
    ("option.fuse_qkv", "x", "boolean"),
    ("option.attention_layout", "BHS", "BSH, HSB"),
    ("option.collectives_layout", "SBH", "BSH, HSB"),  # SBH is a cache layout only
    ("option.cache_layout", "HSB", "SBH, BSH"),
    ("option.model_loader", "hf", "tnx, optimum, vllm"),
    ("option.partition_schema", "gguf", "legacy, optimum, safetensors, compile_only"),
    ("option.speculative_length", "0", "greater than or equal to 1"),
    ("option.draft_model_tp_size", "0", "greater than or equal to 1"),
    ("option.draft_model_compiled_path", "http://host/neff", "s3:// URL or a local directory"),
    ("option.amp", "f8", "f32, f16, bf16"),
    ("option.scheduling_policy", "lifo", "fcfs, shortest_prompt_first"),
    ("option.load_in_8bit", "x", "true or false"),
]


@pytest.mark.parametrize(("key", "raw", "fragment"), REJECTED, ids=[f"{r[0]}={r[1]}" for r in REJECTED])
def test_bad_value_names_written_key(key: str, raw: str, fragment: str) -> None:
    error = parse_error({key: raw})
    assert error.keys == (key,)
    assert fragment in str(error)
    assert repr(raw) in str(error)


@pytest.mark.parametrize(
    ("env_name", "raw"),
    [("OPTION_MAX_ROLLING_BATCH_SIZE", "many"), ("OPTION_DTYPE", "int4"), ("OPTION_ROLLING_BATCH", "lmi-dist")],
)
def test_env_errors_name_the_variable(env_name: str, raw: str) -> None:
    error = parse_error(env={env_name: raw})
    assert error.keys == (env_name,)
    assert f"{env_name}={raw!r}" in str(error)


def test_every_bad_key_is_reported_at_once() -> None:
    error = parse_error(
        {"option.max_rolling_batch_size": "abc", "option.dtype": "int4", "option.attention_layout": "XYZ"},
        env={"OPTION_NEURON_OPTIMIZE_LEVEL": "9", "OPTION_DEVICE": "tpu"},
    )
    assert set(error.keys) == {
        "option.max_rolling_batch_size",
        "option.dtype",
        "option.attention_layout",
        "OPTION_NEURON_OPTIMIZE_LEVEL",
        "OPTION_DEVICE",
    }
    assert str(error).startswith("invalid configuration (5 problems):")
    assert str(error).count("\n  - ") == 5
