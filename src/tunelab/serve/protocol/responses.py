"""`POST /v1/responses`: OpenAI's Responses API, the subset a stateless server honours (as vLLM serves it).

Served: `model` (the base when left out), `input` (a string, or items: messages with input_text / output_text parts, `function_call`,
`function_call_output`; `reasoning` items are accepted and dropped), `instructions` (a system
message), function `tools`, `tool_choice` ("auto" | "none" | "required" | {"type": "function", "name"}),
`parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`, `stream`; accepted and ignored:
metadata, user, safety_identifier, prompt_cache_key, service_tier, stream_options, `store: false`,
`text.format` of type text, `truncation: "disabled"`.

Refused with a 400 naming the field: what needs stored state (`previous_response_id`, `conversation`,
`store: true`, `background`, `prompt`), built-in tools (web_search, file_search, code_interpreter,
computer_use, image_generation, mcp, ...), `include`, `reasoning` settings, `truncation: "auto"`,
`max_tool_calls`, `top_logprobs`, a `text.format` other than text, input images, files and audio,
and any field this module does not name.

`ResponsesRequest.chat()` turns the request into the ChatRequest the chat serving class runs (one
template, one parser for both APIs).
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.chat import FUNCTION_NAME, ChatRequest
from tunelab.serve.protocol.common import Request, Response

IGNORED = {"metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier", "stream_options"}
# unsupported unless the value is one of these (the default's meaning)
HARMLESS = {"store": (False, None), "background": (False, None), "previous_response_id": (None,),
            "conversation": (None,), "prompt": (None,), "include": (None, []), "reasoning": (None,),
            "truncation": (None, "disabled"), "max_tool_calls": (None,), "top_logprobs": (None, 0),
            "text": (None, {}, {"format": {"type": "text"}})}
WHY = {"store": "responses are not stored (send store: false, or leave it out)",
       "background": "background responses need stored state",
       "previous_response_id": "responses are not stored: send the whole conversation as input",
       "conversation": "conversations are not stored: send the whole conversation as input",
       "prompt": "stored prompts are not supported", "include": "no extra output data is available",
       "reasoning": "reasoning settings are not supported (the model's <think> text comes back as a reasoning item)",
       "truncation": "input is never truncated (a prompt over the context is a 400)",
       "max_tool_calls": "not supported", "top_logprobs": "log probabilities are not supported",
       "text": "only text output (text.format type 'text') is supported"}


class Part(Request):
    type: Literal["input_text", "output_text"]
    text: str


class MessageItem(Request):
    type: Literal["message"] | None = None
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[Part]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionCallItem(Request):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(Request):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Part]

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


class ReasoningItem(Request):
    type: Literal["reasoning"]


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


class NamedFunction(Request):
    type: Literal["function"]
    name: str


class ResponsesRequest(Request):
    model: str | None = None  # the served base when left out (as vLLM does)
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[dict] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool | None = False

    def refuse_unsupported(self) -> None:
        for key, value in (self.model_extra or {}).items():
            if key in IGNORED or value in HARMLESS.get(key, ()):
                continue
            if key in HARMLESS:
                raise APIError(400, f"unsupported value for '{key}': {WHY[key]}", param=key, code="unsupported_value")
            raise APIError(400, f"unsupported parameter '{key}'", param=key, code="unsupported_parameter")

    def function_tools(self) -> list[dict]:
        """The tools in chat's shape; a built-in tool (anything but "function") is a 400 naming it."""
        out = []
        for i, t in enumerate(self.tools or []):
            kind = t.get("type") if isinstance(t, dict) else None
            if kind != "function":
                raise APIError(400, f"tool type '{kind}' is not supported: only function tools are",
                               param=f"tools.{i}.type", code="unsupported_value")
            name = t.get("name")
            if not isinstance(name, str) or not re.match(FUNCTION_NAME, name):
                raise APIError(400, "a function tool needs a 'name' of letters, digits, _ and - (at most 64)",
                               param=f"tools.{i}.name", code="invalid_value")
            fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
            out.append({"type": "function", "function": fn})
        return out

    def messages(self) -> list[dict]:
        """The input as chat messages: instructions first, calls grouped into one assistant message,
        each output a tool message; a call_id no earlier call has, or an input that does not end with
        a user message or a function_call_output, is a 400 naming it."""
        out = [{"role": "system", "content": self.instructions}] if self.instructions else []
        items = [MessageItem(role="user", content=self.input)] if isinstance(self.input, str) else self.input
        calls: set[str] = set()
        last = None
        for i, item in enumerate(items):
            if isinstance(item, MessageItem):
                out.append({"role": item.role, "content": item.text()})
            elif isinstance(item, FunctionCallItem):
                try:
                    ok = isinstance(json.loads(item.arguments or "{}"), dict)
                except ValueError:
                    ok = False
                if not ok:
                    raise APIError(400, f"the arguments of function_call '{item.call_id}' are not a JSON object",
                                   param=f"input.{i}.arguments", code="invalid_value")
                call = {"id": item.call_id, "type": "function",
                        "function": {"name": item.name, "arguments": item.arguments}}
                prev = out[-1] if out else None
                if prev is not None and prev["role"] == "assistant" and (prev.get("tool_calls") or last is MessageItem):
                    prev.setdefault("tool_calls", []).append(call)
                else:
                    out.append({"role": "assistant", "content": None, "tool_calls": [call]})
                calls.add(item.call_id)
            elif isinstance(item, FunctionCallOutputItem):
                if item.call_id not in calls:
                    raise APIError(400, f"call_id '{item.call_id}' answers no earlier function_call item",
                                   param=f"input.{i}.call_id", code="invalid_value")
                out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
            else:
                continue  # reasoning: not sent back to the model
            last = type(item)
        talk = [m for m in out if m["role"] not in ("system", "developer")]
        if not talk or talk[-1]["role"] not in ("user", "tool"):
            raise APIError(400, "the input must end with a user message or a function_call_output",
                           param="input", code="invalid_value")
        return out

    def chat(self, base: str) -> ChatRequest:
        """The ChatRequest this request runs as (`base`: the model when the request names none)."""
        self.refuse_unsupported()
        choice = self.tool_choice
        if isinstance(choice, NamedFunction):
            choice = {"type": "function", "function": {"name": choice.name}}
        body = {"model": self.model if self.model is not None else base, "messages": self.messages(), "tools": self.function_tools() or None,
                "tool_choice": choice, "parallel_tool_calls": self.parallel_tool_calls,
                "max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "stream": self.stream}
        return ChatRequest.model_validate({k: v for k, v in body.items() if v is not None}, strict=False)


class ResponseUsage(Response):
    input_tokens: int
    input_tokens_details: dict = {"cached_tokens": 0}
    output_tokens: int
    output_tokens_details: dict = {"reasoning_tokens": 0}
    total_tokens: int


class ResponseObject(Response):
    """A response: `output` holds reasoning, message and function_call items in OpenAI's shapes."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[dict]
    usage: ResponseUsage | None = None
    error: None = None
    incomplete_details: dict | None = None
    instructions: str | None = None
    metadata: dict = {}
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tool_choice: str | dict = "auto"
    tools: list[dict] = []
    text: dict = {"format": {"type": "text"}}
    truncation: Literal["disabled"] = "disabled"
    store: bool = False
    background: bool = False


class ResponseEvent(Response):
    """One Server-Sent Event of a streamed response (`event: <type>` and its data)."""

    type: str
    sequence_number: int
