"""Structured output and tool calls through the DJL entry point, driven over Java's wire: the LMI
``parameters.structured_outputs`` / ``parameters.grammar`` fields and a chat body's
``response_format`` and ``tools``, in a rolling batch beside a free request. Runs in the LMI Neuron
images' Pythons too (``scripts/compat-venv.sh``)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from djl_python import transformers_neuronx as tnx
from djl_python.djl import protocol
from tests.serving.djl_java import JavaRollingBatch, http_input, in_process
from tests.serving.test_djl_entry_point import build_engine

SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green"]},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["color", "n"], "additionalProperties": False}
TOOL = {"type": "function", "function": {"name": "pick", "parameters": SCHEMA}}


@pytest.fixture
def service(tiny_llama_512):
    protocol.activate(protocol.protocol_for("0.28.0"))
    config, engine = build_engine(tiny_llama_512, n_positions="512")
    svc = tnx.TransformersNeuronXService()
    svc.initialize({"model_dir": str(tiny_llama_512), "rolling_batch": "auto"}, engine=engine, config=config)
    return svc


def test_lmi_and_chat_constraints_through_a_rolling_batch(service):
    compact = {"json": SCHEMA, "disable_any_whitespace": True}
    done = JavaRollingBatch(in_process(service.handle, "0.28.0"), "0.28.0").run({
        0: [("json", http_input(json.dumps({"inputs": "Pick:", "parameters": {
                "max_new_tokens": "100", "do_sample": "true", "structured_outputs": compact}}))),
            ("free", http_input(json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 5}})))],
        1: [("regex", http_input(json.dumps({"inputs": "Code:", "parameters": {
                "max_new_tokens": 20, "grammar": {"type": "regex", "value": "[a-c]{2}-[0-9]"}}}))),
            ("chat", http_input(json.dumps({"messages": [{"role": "user", "content": "Pick"}], "max_tokens": 400,
                                            "response_format": {"type": "json_schema", "json_schema": {
                                                "name": "pick", "schema": SCHEMA}},
                                            "structured_outputs": None}))),
            ("tool", http_input(json.dumps({"messages": [{"role": "user", "content": "Pick"}], "max_tokens": 400,
                                            "tools": [TOOL], "tool_choice": "required",
                                            "parallel_tool_calls": False}))),
            ("bad", http_input(json.dumps({"inputs": "x", "parameters": {"structured_outputs": {"regex": "a(b"}}})))],
    })
    jsonschema.validate(json.loads(json.loads(done["json"].text)["generated_text"]), SCHEMA)
    assert re.fullmatch("[a-c]{2}-[0-9]", json.loads(done["regex"].text)["generated_text"])
    chat = json.loads(done["chat"].text)
    jsonschema.validate(json.loads(chat["choices"][0]["message"]["content"]), SCHEMA)
    tool = json.loads(done["tool"].text)["choices"][0]
    assert tool["finish_reason"] == "tool_calls"
    call = tool["message"]["tool_calls"][0]
    assert call["function"]["name"] == "pick"
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMA)
    assert done["bad"].error["code"] == 424 and "parameters.structured_outputs.regex" in done["bad"].error["error"]
    assert "generated_text" in json.loads(done["free"].text)
    assert not service.engine.has_unfinished()
