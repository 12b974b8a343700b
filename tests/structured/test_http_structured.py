"""Structured output and tool calling against a real ``djl-serve`` process on 127.0.0.1, through
the clients users have: the ``openai`` SDK (``chat.completions.parse``, tools), TGI's
``text_generation`` client (``grammar``) and LMI's ``/invocations``. Outputs are validated with
``jsonschema``; several constrained and free requests run in one batch."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field
from text_generation import Client
from text_generation.types import Grammar, GrammarType

from tests.serving.http_server import model_folder, start_server
from tests.structured.schemas import CHOICES, MAX_NEW_TOKENS, REGEX, SCHEMAS

# A Hermes-style template: it renders the tools (by name: the tiny tokenizer spends a token per
# character or two), assistant tool calls and tool results.
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:{% for t in tools %} {{ t.function.name }}{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "{%- else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                   "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tiny_llama_512, tmp_path_factory):
    template = tmp_path_factory.mktemp("template") / "tools.jinja"
    template.write_text(TOOL_TEMPLATE)
    folder = model_folder(tiny_llama_512, tmp_path_factory.mktemp("structured") / "tiny", {
        "device": "cpu", "max_rolling_batch_size": 8, "n_positions": 512, "chat_template": template,
        "enable_auto_tool_choice": "true", "tool_call_parser": "hermes"})
    srv = start_server(folder, tmp_path_factory.mktemp("logs") / "structured.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


SAMPLED = {"temperature": 1.0, "max_tokens": MAX_NEW_TOKENS}


def _schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _streamed_text(stream) -> tuple[str, str]:
    chunks = list(stream)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].choices[0].finish_reason


def test_every_schema_validates_streamed_and_not_in_one_batch_with_free_requests(oai):
    def constrained(job):
        i, (name, schema), stream = job
        kwargs = dict(model="tiny", messages=USER, response_format=_schema_format(name, schema), seed=i, **SAMPLED)
        if stream:
            return name, *_streamed_text(oai.chat.completions.create(stream=True, **kwargs))
        resp = oai.chat.completions.create(**kwargs)
        return name, resp.choices[0].message.content, resp.choices[0].finish_reason

    def free(_):
        return oai.completions.create(model="tiny", prompt="Hello", max_tokens=40, temperature=1.0).choices[0].text

    jobs = [(i, item, stream) for i, item in enumerate(SCHEMAS.items()) for stream in (False, True)]
    with ThreadPoolExecutor(len(jobs) + 3) as pool:
        free_runs = [pool.submit(free, None) for _ in range(3)]
        results = list(pool.map(constrained, jobs))
        assert all(isinstance(f.result(), str) for f in free_runs)
    for name, text, reason in results:
        assert reason == "stop", (name, text)
        jsonschema.validate(json.loads(text), SCHEMAS[name])


def test_openai_sdk_parse_returns_the_pydantic_model(oai):
    class Weather(BaseModel):
        city: str = Field(max_length=8)
        degrees: int = Field(ge=-40, le=50)
        sky: Literal["clear", "cloudy", "rain"]

    for seed in range(3):
        completion = oai.chat.completions.parse(model="tiny", messages=USER, response_format=Weather, seed=seed,
                                                **SAMPLED)
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Weather) and -40 <= parsed.degrees <= 50


def test_vllm_structured_outputs_regex_choice_and_json_object_on_both_endpoints(oai):
    regex = oai.completions.create(model="tiny", prompt="Code:", extra_body={"structured_outputs": {"regex": REGEX}},
                                   **SAMPLED)
    assert re.fullmatch(REGEX, regex.choices[0].text)
    choice = oai.chat.completions.create(model="tiny", messages=USER, **SAMPLED,
                                         extra_body={"structured_outputs": {"choice": CHOICES}})
    assert choice.choices[0].message.content in CHOICES
    # Greedy: "any object" has no bound a random model must respect, and sampled it may run to max_tokens.
    obj = oai.chat.completions.create(model="tiny", messages=USER, response_format={"type": "json_object"},
                                      max_tokens=MAX_NEW_TOKENS, temperature=0)
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    compact = oai.completions.create(model="tiny", prompt="JSON:", **SAMPLED, extra_body={"structured_outputs": {
        "json": SCHEMAS["nested"], "disable_any_whitespace": True}})
    text = compact.choices[0].text
    jsonschema.validate(json.loads(text), SCHEMAS["nested"])
    assert json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")) == text  # no whitespace at all
    lark = oai.completions.create(model="tiny", prompt="Say:", **SAMPLED, extra_body={"structured_outputs": {
        "grammar": 'start: "ab" NUM\nNUM: /[0-9]{2}/'}})
    assert re.fullmatch(r"ab[0-9]{2}", lark.choices[0].text)


def test_bad_constraints_get_a_400_naming_the_field_while_others_run(server, oai):
    def running():
        return oai.chat.completions.create(model="tiny", messages=USER, max_tokens=60, temperature=1.0,
                                           extra_body={"ignore_eos": True}).usage.completion_tokens

    bad = [
        ({"extra_body": {"structured_outputs": {"regex": "a(b"}}}, "structured_outputs.regex"),
        ({"response_format": _schema_format("x", {"type": "nonsense"})}, "response_format.json_schema.schema"),
        ({"extra_body": {"structured_outputs": {"regex": "a", "choice": ["b"]}}}, "structured_outputs"),
        ({"response_format": {"type": "json_object"}, "extra_body": {"structured_outputs": {"regex": "a"}}},
         "structured_outputs"),
        ({"extra_body": {"structured_outputs": {"structural_tag": "{}"}}}, "structured_outputs.structural_tag"),
    ]
    with ThreadPoolExecutor(2) as pool:
        neighbour = pool.submit(running)
        for kwargs, field in bad:
            with pytest.raises(openai.BadRequestError) as refused:
                oai.chat.completions.create(model="tiny", messages=USER, max_tokens=10, **kwargs)
            assert refused.value.body["param"] == field, refused.value.body
        assert neighbour.result() == 60


def test_tgi_client_grammar_json_and_regex(server):
    client = Client(server.url, timeout=120)
    schema = SCHEMAS["enum_and_optional"]
    resp = client.generate("Color:", max_new_tokens=MAX_NEW_TOKENS, do_sample=True, seed=3,
                           grammar=Grammar(type=GrammarType.Json, value=schema))
    jsonschema.validate(json.loads(resp.generated_text), schema)
    streamed = "".join(r.token.text for r in client.generate_stream(
        "Code:", max_new_tokens=40, grammar=Grammar(type=GrammarType.Regex, value=REGEX)) if not r.token.special)
    assert re.fullmatch(REGEX, streamed)
    refused = httpx.post(f"{server.url}/generate", json={"inputs": "x", "parameters": {
        "grammar": {"type": "regex", "value": "a(b"}}})
    assert refused.status_code == 400
    assert "parameters.grammar.value" in refused.json()["error"]


def test_lmi_parameters_structured_outputs_and_grammar(server):
    schema = SCHEMAS["bounded_numbers"]
    for parameters in ({"structured_outputs": {"json": schema}}, {"grammar": {"type": "json", "value": schema}}):
        resp = httpx.post(f"{server.url}/invocations", timeout=120, json={
            "inputs": "Numbers:", "parameters": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": True, **parameters}})
        assert resp.status_code == 200, resp.text
        jsonschema.validate(json.loads(resp.json()["generated_text"]), schema)
    both = httpx.post(f"{server.url}/invocations", json={"inputs": "x", "parameters": {
        "structured_outputs": {"regex": "a"}, "grammar": {"type": "regex", "value": "b"}}})
    assert both.status_code == 400 and "parameters.grammar" in both.text


def _arguments(call) -> dict:
    args = json.loads(call.function.arguments)
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


def test_tool_round_trip_required_named_then_the_answer(oai):
    # One call at most: a random model, free to add list items, would otherwise run to max_tokens.
    required = oai.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER, TIME], tool_choice="required",
                                           parallel_tool_calls=False, **SAMPLED)
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        _arguments(call)
        assert call.id.startswith("chatcmpl-tool-")
    named = oai.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER, TIME], **SAMPLED,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and named.choices[0].finish_reason == "stop"
    args = _arguments(call)
    history = USER + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                      {"role": "tool", "tool_call_id": call.id, "content": f"18 degrees in {args['city']}"}]
    answer = oai.chat.completions.create(model="tiny", messages=history, tools=[WEATHER, TIME], tool_choice="none",
                                         max_tokens=20, temperature=0)
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert isinstance(answer.choices[0].message.content, str)


def test_tool_calls_stream_as_deltas(oai):
    for tool_choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        chunks = list(oai.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER, TIME], stream=True,
                                                  tool_choice=tool_choice, parallel_tool_calls=False, **SAMPLED))
        calls: dict[int, dict] = {}
        for chunk in chunks:
            for delta in chunk.choices[0].delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
        assert calls, chunks
        for entry in calls.values():
            tool = {"get_weather": WEATHER, "get_time": TIME}[entry["name"]]
            jsonschema.validate(json.loads(entry["arguments"]), tool["function"]["parameters"])
        expected = "tool_calls" if tool_choice == "required" else "stop"
        assert chunks[-1].choices[0].finish_reason == expected


def test_tgi_client_chat_with_a_named_tool(server):
    """TGI's chat route: its client sends ``model: "tgi"`` and names the function with a plain string."""
    from text_generation.types import Message, Tool

    client = Client(server.url, timeout=120)
    resp = client.chat(messages=[Message(role="user", content="Time in Paris?")], tools=[Tool(**TIME)],
                       tool_choice="get_time", max_tokens=MAX_NEW_TOKENS, seed=1, temperature=1.0)
    call = resp.choices[0].message.tool_calls[0]
    assert call["function"]["name"] == "get_time"
    jsonschema.validate(json.loads(call["function"]["arguments"]), TIME["function"]["parameters"])
    plain = client.chat(messages=[Message(role="user", content="Hi")], max_tokens=4)
    assert plain.choices[0].message.role == "assistant" and plain.system_fingerprint.startswith("djl-python-")


def test_tools_reach_the_chat_template(oai):
    plain = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=1)
    with_tools = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=1, tools=[WEATHER],
                                             tool_choice="none")
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 5


def test_auto_tool_choice_without_a_call_is_plain_content(oai):
    resp = oai.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER], max_tokens=8, temperature=0)
    assert resp.choices[0].message.tool_calls is None and resp.choices[0].finish_reason in ("stop", "length")
