"""Tool calling in the API layer: ``tool_choice`` rules, the forced-call schemas, and the parsers
(whole and streamed deltas must tell the same story)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from djl_python.api.body import validate
from djl_python.api.openai import ChatCompletionRequest
from djl_python.api.tool_parsers import ToolCallStream, extract, finish_reason
from djl_python.api.tools import AUTO_NEEDS_PARSER, ToolDefinition, plan_tools, required_schema
from djl_python.engine.request import InvalidRequest

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"},
                                                                          "unit": {"$ref": "#/$defs/unit"}},
                                                           "required": ["city"],
                                                           "$defs": {"unit": {"enum": ["C", "F"]}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
USER = [{"role": "user", "content": "Weather in Paris?"}]


def tools(*defs):
    return [ToolDefinition.model_validate(d) for d in defs]


def chat(**fields):
    return validate(ChatCompletionRequest, {"messages": USER, **fields})


def test_tool_definitions_are_read_as_vllm_and_tgi_write_them():
    untyped = chat(tools=[{"function": {"name": "server:lookup", "arguments": {"type": "object"}}}],
                   tool_choice={"function": {"name": "server:lookup"}})
    plan = untyped.tool_plan(None)
    assert plan.mode == "named" and plan.tools[0].function.parameters == {"type": "object"}
    with pytest.raises(InvalidRequest) as prompt:
        chat(tools=[WEATHER], tool_choice="none", tool_prompt="Use the tools").to_sampling_params({})
    assert prompt.value.field == "tool_prompt"
    assert chat(tools=[WEATHER], tool_choice="none", tool_prompt=None).to_sampling_params({}).constraint is None


def test_tool_choice_defaults_and_refusals_follow_vllm():
    with pytest.raises(InvalidRequest, match="requires --enable-auto-tool-choice") as auto:
        plan_tools(tools(WEATHER), None, None, None)  # tools without tool_choice means auto
    assert auto.value.field == "tool_choice" and AUTO_NEEDS_PARSER in str(auto.value)
    assert plan_tools(tools(WEATHER), None, None, "hermes").mode == "auto"
    assert plan_tools(None, None, None, None).mode == "none"
    assert plan_tools(tools(WEATHER), "none", None, None).template_tools()[0]["function"]["name"] == "get_weather"
    for bad, field in (([], "tools"),):
        with pytest.raises(InvalidRequest) as refused:
            plan_tools(bad, None, None, None)
        assert refused.value.field == field
    with pytest.raises(InvalidRequest) as no_tools:
        plan_tools(None, "required", None, None)
    assert no_tools.value.field == "tool_choice"
    with pytest.raises(InvalidRequest) as unknown:
        chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}).to_sampling_params({})
    assert unknown.value.field == "tool_choice.function.name"
    # TGI's chat route names a function with a plain string.
    assert plan_tools(tools(WEATHER, TIME), "get_time", None, None).function == "get_time"
    with pytest.raises(InvalidRequest, match="invalid value"):
        plan_tools(tools(WEATHER), "sometimes", None, None)


def test_forced_choices_become_grammars_and_refuse_a_second_constraint():
    named = chat(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    params = named.to_sampling_params({})
    assert json.loads(params.constraint.value) == WEATHER["function"]["parameters"]
    assert params.constraint.field == "tools.0.function.parameters"  # a schema that fails to compile is named there
    required = chat(tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False).to_sampling_params({})
    schema = json.loads(required.constraint.value)
    assert schema["maxItems"] == 1 and schema["$defs"] == {"unit": {"enum": ["C", "F"]}}
    jsonschema.validate([{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"name": "get_weather", "parameters": {"unit": "C"}}], schema)
    with pytest.raises(InvalidRequest) as both:
        chat(tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"}).to_sampling_params({})
    assert both.value.field == "response_format"
    # As vLLM: with auto, the output constraint applies (the model may still answer instead of calling).
    auto = chat(tools=[WEATHER], response_format={"type": "json_object"}).to_sampling_params({}, "hermes")
    assert json.loads(auto.constraint.value) == {"type": "object"}
    assert "maxItems" not in required_schema(tools(WEATHER), parallel=True)


PARSED = [
    ("hermes", 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
     '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>', "Let me check.",
     [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    ("hermes", '<tool_call>{"name": "get_time", "arguments": {}}', None, [("get_time", {})]),  # unclosed last call
    ("hermes", "No tools needed.", "No tools needed.", []),
    ("hermes", '<tool_call>{"name": "get_time", "argum', '<tool_call>{"name": "get_time", "argum', []),
    ("llama3_json", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
     '{"name": "get_time", "arguments": {}}', None, [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    ("llama3_json", "It is sunny.", "It is sunny.", []),
    ("llama3_json", 'Sure! {"name": "get_time", "arguments": {}}', "Sure! ", [("get_time", {})]),  # prose first
    ("llama3_json", "Use {braces} freely.", "Use {braces} freely.", []),
    ("llama3_json", '{"name": "get_weather", "parameters": {"city": ', '{"name": "get_weather", "parameters": {"city": ',
     []),
]


@pytest.mark.parametrize(("parser", "text", "content", "calls"), PARSED)
def test_parsers_read_calls_and_streamed_deltas_equal_the_whole(parser, text, content, calls):
    plan = plan_tools(tools(WEATHER, TIME), "auto", None, parser)
    got_content, got_calls = extract(plan, text)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got_calls] == calls
    assert all(c.id.startswith("chatcmpl-tool-") and len(c.id) == len("chatcmpl-tool-") + 32 for c in got_calls)
    # Streamed in small pieces: content and calls add up to the whole result.
    for size in (1, 3, 7):
        stream = ToolCallStream(plan)
        streamed, deltas = "", []
        for i in range(0, len(text), size):
            piece, new = stream.feed(text[i: i + size])
            streamed, deltas = streamed + piece, deltas + new
        piece, new = stream.finish()
        streamed, deltas = streamed + piece, deltas + new
        assert streamed == (content or "")
        assert [(d["function"]["name"], json.loads(d["function"]["arguments"])) for d in deltas] == calls
        assert [d["index"] for d in deltas] == list(range(len(calls)))
        assert stream.calls_made == bool(calls)


def test_named_call_streams_arguments_and_keeps_stop():
    plan = chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}).tool_plan(None)
    stream = ToolCallStream(plan)
    pieces = ['{"city"', ': "Paris"', "}"]
    deltas = [d for p in pieces for d in stream.feed(p)[1]]
    assert deltas[0]["function"]["name"] == "get_weather" and deltas[0]["id"].startswith("chatcmpl-tool-")
    assert "name" not in deltas[1]["function"]
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"city": "Paris"}'
    assert finish_reason(plan, True, "stop") == "stop"  # a named function keeps stop, as OpenAI and vLLM
    required = plan_tools(tools(WEATHER), "required", None, None)
    content, calls = extract(required, '[{"name": "get_weather", "parameters": {"city": "Oslo"}}]')
    assert content == "" and json.loads(calls[0].arguments) == {"city": "Oslo"}
    assert finish_reason(required, True, "stop") == "tool_calls"
    assert finish_reason(required, True, "length") == "length"


def test_history_tool_calls_reach_the_template_as_objects():
    from djl_python.api.chat import flatten, parse_messages

    messages = parse_messages(USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
    ])
    flat = flatten(messages)
    assert flat[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert flat[2] == {"role": "tool", "content": "18 C", "tool_call_id": "c1"}
    with pytest.raises(InvalidRequest) as bad:
        flatten(parse_messages([{"role": "assistant", "tool_calls": [{"id": "x"}]}]))
    assert bad.value.field == "messages.0.tool_calls.0.function"


def test_openai_renderer_reads_auto_calls_whole_and_streamed():
    """The text of an auto tool call becomes ``message.tool_calls`` (whole) and ``delta.tool_calls``
    (streamed), with ``finish_reason: "tool_calls"``; content before the call stays content."""
    from djl_python.api.openai_render import OpenAiRenderer
    from djl_python.engine.request import FinishReason, RequestOutput

    text = 'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    pieces = [text[i: i + 5] for i in range(0, len(text), 5)]
    outputs = [RequestOutput("r", [i], piece, finished=i == len(pieces) - 1,
                             finish_reason=FinishReason.EOS if i == len(pieces) - 1 else None,
                             prompt_tokens=3, generated_tokens=i + 1) for i, piece in enumerate(pieces)]
    plan = plan_tools(tools(WEATHER, TIME), "auto", None, "hermes")
    whole = json.loads(OpenAiRenderer(chat=True, request_id="r", model="m", logprobs=False, tools=plan)
                       .whole(outputs)[0])
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Checking."
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

    renderer = OpenAiRenderer(chat=True, request_id="r", model="m", logprobs=False, stream=True, tools=plan)
    events = [json.loads(line[len("data: "):]) for out in outputs for line in renderer.feed(out).split("\n\n")
              if line.startswith("data: ")]
    deltas = [e["choices"][0]["delta"] for e in events]
    assert "".join(d.get("content") or "" for d in deltas) == "Checking."
    streamed_calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in streamed_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
