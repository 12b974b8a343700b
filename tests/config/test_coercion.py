"""Every option parses from the string form it has in serving.properties."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from djl_python.config import HandlerConfig
from tests.config.helpers import parse

# (written key, raw string, field, expected parsed value)
CASES: list[tuple[str, str, str, Any]] = [
    ("engine", "Python", "engine", "Python"),
    ("option.entryPoint", "djl_python.transformers_neuronx", "entry_point", "djl_python.transformers_neuronx"),
    ("job_queue_size", "100", "job_queue_size", 100),
    ("option.model_id", "  meta-llama/Llama-2-7b-hf ", "model_id", "meta-llama/Llama-2-7b-hf"),
    ("option.model_dir", "/opt/ml/model", "model_dir", "/opt/ml/model"),
    ("option.revision", "main", "revision", "main"),
    ("option.trust_remote_code", "TRUE", "trust_remote_code", True),
    ("option.tensor_parallel_degree", "4", "tensor_parallel_degree", 4),
    ("option.tensor_parallel_degree", "MAX", "tensor_parallel_degree", "max"),
    ("option.rolling_batch", "TNX", "rolling_batch", "tnx"),
    ("option.rolling_batch", "true", "rolling_batch", "auto"),
    ("option.rolling_batch", "False", "rolling_batch", "disable"),
    ("option.max_rolling_batch_size", "8", "max_rolling_batch_size", 8),
    ("option.max_rolling_batch_prefill_tokens", "4096", "max_rolling_batch_prefill_tokens", 4096),
    ("option.batch_size", "1", "batch_size", 1),
    ("option.max_waiting_requests", "10", "max_waiting_requests", 10),
    ("option.dtype", "bfloat16", "dtype", "bf16"),
    ("option.dtype", "FP16", "dtype", "fp16"),
    ("option.dtype", "float32", "dtype", "fp32"),
    ("option.dtype", "auto", "dtype", None),
    ("option.device", "CPU", "device", "cpu"),
    ("option.predict_timeout", "30", "predict_timeout", 30),
    ("option.model_loading_timeout", "1600", "model_loading_timeout", 1600),
    ("option.output_formatter", "jsonlines", "output_formatter", "jsonlines"),
    ("option.tgi_compat", "yes", "tgi_compat", True),
    ("option.enable_streaming", "HuggingFace", "enable_streaming", "huggingface"),
    ("option.enable_streaming", "false", "enable_streaming", False),
    ("option.waiting_steps", "2", "waiting_steps", 2),
    ("option.mpi_mode", "0", "mpi_mode", False),
    ("option.draft_model_id", "org/draft", "draft_model_id", "org/draft"),
    ("option.spec_length", "3", "spec_length", 3),
    ("option.n_positions", "2048", "n_positions", 2048),
    ("option.context_length_estimate", "512, 256,256", "context_length_estimate", [256, 512]),
    ("option.rolling_batch_strategy", "Continuous_Batching", "rolling_batch_strategy", "continuous_batching"),
    ("option.quantize", "STATIC_INT8", "quantize", "static_int8"),
    ("option.load_split_model", "True", "load_split_model", True),
    ("option.low_cpu_mem_usage", "On", "low_cpu_mem_usage", True),
    ("option.task", "text-generation", "task", "text-generation"),
    ("option.unroll", "4", "unroll", "4"),
    ("option.neuron_optimize_level", "3", "neuron_optimize_level", 3),
    ("option.enable_mixed_precision_accumulation", "TRUE", "enable_mixed_precision_accumulation", True),
    ("option.enable_saturate_infinity", "False", "enable_saturate_infinity", False),
    ("option.compiled_graph_path", "s3://my-bucket/neff/llama", "compiled_graph_path", "s3://my-bucket/neff/llama"),
    ("option.compiled_graph_path", "./neff-cache", "compiled_graph_path", "./neff-cache"),
    ("option.all_reduce_dtype", "bf16", "all_reduce_dtype", "bfloat16"),
    ("option.cast_logits_dtype", "FLOAT32", "cast_logits_dtype", "float32"),
    ("option.group_query_attention", "Shard-Over-Heads", "group_query_attention", "shard-over-heads"),
    ("option.fuse_qkv", "1", "fuse_qkv", True),
    ("option.attention_layout", "hsb", "attention_layout", "HSB"),
    ("option.collectives_layout", "bsh", "collectives_layout", "BSH"),
    ("option.cache_layout", "sbh", "cache_layout", "SBH"),
    ("option.cache_layout", "BSH", "cache_layout", "BSH"),
    ("option.on_device_embedding_config", "/etc/embed.json", "on_device_embedding_config", "/etc/embed.json"),
    ("option.on_device_embedding", "true", "on_device_embedding", True),
    ("option.on_device_generation", "/etc/generation.json", "on_device_generation", "/etc/generation.json"),
    ("option.fuse_mlp", "TRUE", "fuse_mlp", True),
    ("option.fused_rmsnorm_qkv", "false", "fused_rmsnorm_qkv", False),
    ("option.qkv_tiling", "false", "qkv_tiling", False),
    ("option.weight_tiling", "true", "weight_tiling", True),
    ("option.shard_over_sequence", "true", "shard_over_sequence", True),
    ("option.compilation_worker_count", "4", "compilation_worker_count", 4),
    ("option.sequence_parallel", "true", "sequence_parallel", True),
    ("option.sequence_parallel_norm_threshold", "1", "sequence_parallel_norm_threshold", 1),
    ("option.mlp_out_weight_transpose", "false", "mlp_out_weight_transpose", False),
    ("option.multi_node", "false", "multi_node", False),
    ("option.neuron_cc_pipeline_factor", "2", "neuron_cc_pipeline_factor", 2),
    ("option.neuron_quant", "true", "neuron_quant", True),
    ("option.model_loader", "OPTIMUM", "model_loader", "optimum"),
    ("option.partition_schema", "safetensors", "partition_schema", "safetensors"),
    ("option.save_mp_checkpoint_path", "/tmp/partitioned", "save_mp_checkpoint_path", "/tmp/partitioned"),
    ("option.speculative_draft_model", "org/draft", "speculative_draft_model", "org/draft"),
    ("option.speculative_length", "7", "speculative_length", 7),
    ("option.draft_model_tp_size", "2", "draft_model_tp_size", 2),
    ("option.draft_model_compiled_path", "s3://b-ucket/x", "draft_model_compiled_path", "s3://b-ucket/x"),
    ("option.served_model_name", " my-model ", "served_model_name", "my-model"),
    ("option.chat_template", "/etc/chat.jinja", "chat_template", "/etc/chat.jinja"),
    ("option.api_key", "s3cret", "api_key", SecretStr("s3cret")),
    ("option.tool_call_parser", " Llama3_JSON ", "tool_call_parser", "llama3_json"),
    ("option.enable_prefix_caching", "false", "enable_prefix_caching", False),
    ("option.enable_chunked_prefill", "false", "enable_chunked_prefill", False),
    ("option.scheduling_policy", " FCFS ", "scheduling_policy", "fcfs"),
    ("option.speculative_method", " NGram ", "speculative_method", "ngram"),
    ("option.prefix_cache_rows", "8", "prefix_cache_rows", 8),
    ("option.enable_auto_tool_choice", "FALSE", "enable_auto_tool_choice", False),
    ("option.allowed_origins", "https://a.example, https://b.example", "allowed_origins",
     ["https://a.example", "https://b.example"]),
    ("option.allowed_origins", '["*"]', "allowed_origins", ["*"]),
    ("option.memory_budget", "8GiB", "memory_budget", 8 * 2**30),
    ("option.memory_budget", "1.5GB", "memory_budget", 1_500_000_000),
    ("option.memory_budget", "4096", "memory_budget", 4096),
    ("option.max_request_bytes", "8MiB", "max_request_bytes", 8 * 2**20),
    ("option.max_request_bytes", "2000000", "max_request_bytes", 2_000_000),
    ("option.max_unsent_tokens", "64", "max_unsent_tokens", 64),
    ("option.stream_stall_timeout", "5", "stream_stall_timeout", 5),
    ("option.max_connections", "100", "max_connections", 100),
    ("option.header_timeout", "3", "header_timeout", 3),
    ("option.body_timeout", "4", "body_timeout", 4),
]


@pytest.mark.parametrize(("key", "raw", "field", "expected"), CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
def test_option_parses_from_string(key: str, raw: str, field: str, expected: Any) -> None:
    config = parse({key: raw})
    assert getattr(config, field) == expected


@pytest.mark.parametrize(("key", "raw", "field", "expected"), CASES[:12], ids=[c[0] for c in CASES[:12]])
def test_option_parses_from_env(key: str, raw: str, field: str, expected: Any) -> None:
    written = key.removeprefix("option.")
    env_name = "OPTION_" + written.upper()
    assert getattr(parse(env={env_name: raw}), field) == expected


def test_cases_cover_every_field() -> None:
    assert {case[2] for case in CASES} == set(HandlerConfig.model_fields)


def test_defaults() -> None:
    config = parse()
    assert (config.tensor_parallel_degree, config.max_rolling_batch_size, config.batch_size) == (1, 32, 1)
    assert (config.rolling_batch, config.device, config.model_loader) == ("auto", "auto", "tnx")
    assert (config.predict_timeout, config.model_loading_timeout, config.max_waiting_requests) == (240, 1800, 256)
    assert config.dtype is None and config.amp is None and config.n_positions is None
    assert config.trust_remote_code is False and config.tgi_compat is False
    assert config.neuron_optimize_level is None and config.load_in_8bit is False


def test_config_is_immutable() -> None:
    config = parse({"option.max_rolling_batch_size": "8"})
    with pytest.raises(Exception):
        config.max_rolling_batch_size = 16  # type: ignore[misc]
    assert config.max_rolling_batch_size == 8


def test_native_values_are_accepted() -> None:
    config = HandlerConfig(tensor_parallel_degree=2, context_length_estimate=[512, 128], trust_remote_code=True)
    assert (config.tensor_parallel_degree, config.context_length_estimate, config.trust_remote_code) == (
        2,
        [128, 512],
        True,
    )
