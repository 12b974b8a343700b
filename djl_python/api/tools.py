"""Tool calling on the chat route: tool definitions, ``tool_choice``, and what each choice asks of
the engine and of the renderer.

Behaviour follows vLLM's OpenAI server (vllm-project/vllm, ``check_tool_usage`` in the chat
protocol and ``get_json_schema_from_tools`` in ``vllm/tool_parsers/utils.py``):

* ``tools`` present and ``tool_choice`` unset means ``auto``; no tools means ``none``. ``tools: []``,
  a ``tool_choice`` other than ``none`` without tools, and a named function not among the tools
  are 400s. ``type`` defaults to ``"function"``, as vLLM's; a function's schema may be called
  ``arguments`` (TGI) as well as ``parameters``.
* ``none``: the tools still reach the chat template; the output is plain content.
* ``auto``: the model decides; its text is read by the configured ``tool_call_parser``
  (``djl_python.api.tool_parsers``). Without ``enable_auto_tool_choice`` it is a 400 with vLLM's
  message.
* ``required``: the grammar forces a JSON list of ``{"name", "parameters"}`` calls, one ``anyOf``
  branch per tool (``$defs`` lifted to the top); at most one call when ``parallel_tool_calls`` is
  false. A named function: the grammar forces that function's ``parameters`` object. Neither needs
  a parser (vLLM before 0.2x did the same; newer vLLM wants a parser for them too).
* TGI's chat route may name a function with a plain string (``"tool_choice": "get_weather"``).

Tool definitions go to the chat template as the whole ``{"type": "function", "function": {...}}``
objects, as vLLM passes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from djl_python.engine.request import Constraint, InvalidRequest

ToolMode = Literal["none", "auto", "required", "named"]
AUTO_NEEDS_PARSER = ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set '
                     "(here: option.enable_auto_tool_choice=true and option.tool_call_parser)")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class FunctionDefinition(_Body):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    # TGI's tool definitions may call the schema ``arguments``.
    parameters: Optional[dict[str, Any]] = Field(default=None, validation_alias=AliasChoices("parameters", "arguments"))
    strict: Optional[bool] = None


class ToolDefinition(_Body):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: FunctionName


ToolChoice = Union[str, NamedToolChoice]


@dataclass(frozen=True)
class ToolPlan:
    """What one chat request's tools ask for: the mode, the tools, and how to read the output.

    ``parser`` is the model's tool-call format for ``auto`` (None otherwise); ``function`` the
    forced function for ``named``; ``parallel`` whether several calls may be returned.
    """

    mode: ToolMode
    tools: tuple[ToolDefinition, ...] = ()
    function: Optional[str] = None
    parser: Optional[str] = None
    parallel: bool = True

    @property
    def calls_tools(self) -> bool:
        """Whether the output may hold tool calls (the renderer parses it)."""
        return self.mode in ("auto", "required", "named")

    def template_tools(self) -> Optional[list[dict[str, Any]]]:
        """The tools as the chat template receives them (``None`` when there are none)."""
        if not self.tools:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def constraint(self) -> Optional[Constraint]:
        """The grammar a ``required`` or named choice imposes; None for ``none`` and ``auto``."""
        if self.mode == "named":
            index = next(i for i, t in enumerate(self.tools) if t.function.name == self.function)
            return Constraint.json_schema(_parameters(self.tools[index]), f"tools.{index}.function.parameters")
        if self.mode == "required":
            return Constraint.json_schema(required_schema(self.tools, self.parallel), "tools")
        return None


def plan_tools(tools: Optional[Sequence[ToolDefinition]], tool_choice: Optional[ToolChoice],
               parallel_tool_calls: Optional[bool], parser: Optional[str]) -> ToolPlan:
    """Validate ``tools`` / ``tool_choice`` as vLLM does (see the module docstring). ``parser``:
    the server's ``tool_call_parser`` when ``enable_auto_tool_choice`` is on, else None."""
    if tools is not None and not tools:
        raise InvalidRequest("tools", "must not be an empty array; give at least one tool or leave the field out")
    tools = tuple(tools or ())
    names = [t.function.name for t in tools]
    choice = tool_choice if tool_choice is not None else ("auto" if tools else "none")
    parallel = parallel_tool_calls is not False
    if choice == "none":
        return ToolPlan("none", tools, parallel=parallel)
    if not tools:
        raise InvalidRequest("tool_choice", "when using `tool_choice`, `tools` must be set")
    if choice == "auto":
        if parser is None:
            raise InvalidRequest("tool_choice", AUTO_NEEDS_PARSER)
        return ToolPlan("auto", tools, parser=parser, parallel=parallel)
    if choice == "required":
        return ToolPlan("required", tools, parallel=parallel)
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice
    field = "tool_choice.function.name" if isinstance(choice, NamedToolChoice) else "tool_choice"
    if name not in names:
        if isinstance(choice, str):
            raise InvalidRequest("tool_choice", f"invalid value {choice!r}: expected \"none\", \"auto\", "
                                 "\"required\", a named function or the name of one of the tools")
        raise InvalidRequest(field, f"the tool {name!r} does not match any of the specified `tools`")
    return ToolPlan("named", tools, function=name, parallel=parallel)


def _parameters(tool: ToolDefinition) -> dict[str, Any]:
    return tool.function.parameters if tool.function.parameters is not None else {"type": "object", "properties": {}}


def required_schema(tools: Sequence[ToolDefinition], parallel: bool) -> dict[str, Any]:
    """A non-empty JSON list of ``{"name": <a tool>, "parameters": <its schema>}`` (vLLM's shape), each
    tool's ``$defs`` lifted to the top level; one item at most unless ``parallel``. Unlike vLLM's, a
    call holds no other keys: nothing reads them, and a model that adds some could run to max_tokens."""
    defs: dict[str, Any] = {}
    branches = []
    for tool in tools:
        params = dict(_parameters(tool))
        for key, schema in (params.pop("$defs", None) or {}).items():
            if key in defs and defs[key] != schema:
                raise InvalidRequest("tools", f"the definition {key!r} has different schemas in different tools")
            defs[key] = schema
        branches.append({"properties": {"name": {"type": "string", "enum": [tool.function.name]},
                                        "parameters": params},
                         "required": ["name", "parameters"], "additionalProperties": False})
    schema: dict[str, Any] = {"type": "array", "minItems": 1,
                              "items": {"type": "object", "anyOf": branches}}
    if not parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def history_tool_calls(tool_calls: Sequence[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` as chat templates read them: ``arguments`` as an object
    (vLLM turns the JSON string into a dict for every template; unreadable or empty becomes ``{}``)."""
    calls = []
    for i, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{field}.{i}.function", "must be an object with a string `name`")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                arguments = {}
        calls.append({**call, "function": {**function, "arguments": arguments if arguments is not None else {}}})
    return calls
