"""`POST /v1/chat/completions`: the request, the reply and its stream chunks, in OpenAI's shapes.

The extensions: `knowledge_base` (a name) and `knowledge_base_k` [1, 20] on the request; the reply
(and the first chunk of a stream) then carries `citations` (serve/embeddings.py), else leaves it out.
With a knowledge base the reply also carries `cited_by` ("model": the answer cites a passage [n];
"added": it cited none, so a `Sources: ...` line was appended to the content; "none": no passage
matched), on the last chunk of a stream (the one with `finish_reason`).

Tools (OpenAI's): `tools` (function tools), `tool_choice` ("auto" | "none" | "required" | {"type":
"function", "function": {"name"}}), `parallel_tool_calls`; assistant messages may carry `tool_calls`
(content null) and `role: "tool"` messages answer one by `tool_call_id`. `ToolRequest.check_tools`
refuses what cannot be honoured with a 400 naming the field. The reply's message may carry
`tool_calls` (finish_reason "tool_calls") and `reasoning_content` (the model's <think> text, as vLLM
and DeepSeek send it); a chunk's delta likewise (`tool_calls` with index, id, type and name first,
argument fragments after).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response
from tunelab.serve.protocol.sampling import SamplingRequest, StrictRequest, Usage

FinishReason = Literal["stop", "length", "tool_calls"]
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class TextPart(StrictRequest):
    type: Literal["text"]
    text: str


class FunctionCall(StrictRequest):
    name: str
    arguments: str  # a JSON object, as text


class ToolCall(StrictRequest):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(StrictRequest):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # an earlier reply's reasoning (the template decides whether it is shown)

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionDefinition(StrictRequest):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class Tool(StrictRequest):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(StrictRequest):
    name: str


class NamedToolChoice(StrictRequest):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def check_tools(tools: list[dict], choice, param: str = "tool_choice") -> str | None:
    """400 for duplicate tool names or a choice naming no tool (or any choice but "none" without
    tools); returns the forced function's name for a named choice, "" for "required", None otherwise."""
    names = [t["name"] for t in tools]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise APIError(400, f"two tools are named '{dup}'", param="tools", code="invalid_value")
    if choice is None or choice == "auto" or choice == "none":
        return None
    if not tools:
        raise APIError(400, f"'{param}' needs 'tools'", param=param, code="invalid_value")
    if choice == "required":
        return ""
    if choice not in names:
        raise APIError(400, f"'{param}' names '{choice}', which is not one of the tools ({', '.join(names)})",
                       param=param, code="invalid_value")
    return choice


def openai_message(m: Message) -> dict:
    """A request message as the templates take it (OpenAI's shape: tool_calls, tool_call_id kept)."""
    out = {"role": m.role, "content": m.text()}
    if m.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in m.tool_calls]
    if m.role == "assistant" and m.reasoning_content is not None:
        out["reasoning_content"] = m.reasoning_content
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
        if m.name:
            out["name"] = m.name
    return out


def check_conversation(turns: list[dict], param: str = "messages") -> None:
    """400 unless the conversation is one to answer: it ends with a user message or tool results, every
    tool message answers a call of an earlier assistant message (by tool_call_id), and every call's
    arguments are a JSON object."""
    import json

    calls: dict[str, str] = {}
    for i, m in enumerate(turns):
        for c in m.get("tool_calls") or []:
            try:
                ok = isinstance(json.loads(c["function"]["arguments"] or "{}"), dict)
            except ValueError:
                ok = False
            if not ok:
                raise APIError(400, f"the arguments of tool call '{c['id']}' are not a JSON object",
                               param=f"{param}.{i}.tool_calls", code="invalid_value")
            calls[c["id"]] = c["function"]["name"]
        if m["role"] == "tool":
            if not m.get("tool_call_id"):
                raise APIError(400, "a tool message needs 'tool_call_id'", param=f"{param}.{i}.tool_call_id",
                               code="missing_required_parameter")
            if m["tool_call_id"] not in calls:
                raise APIError(400, f"tool_call_id '{m['tool_call_id']}' answers no earlier assistant tool call",
                               param=f"{param}.{i}.tool_call_id", code="invalid_value")
    talk = [m for m in turns if m["role"] not in ("system", "developer")]
    if not talk or talk[-1]["role"] not in ("user", "tool"):
        raise APIError(400, "the last message must be the user's (role 'user') or a tool result (role 'tool')",
                       param=param, code="invalid_value")


class ChatRequest(SamplingRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    knowledge_base: str | None = None
    knowledge_base_k: int | None = Field(default=None, ge=1, le=20)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def tool_specs(self) -> list[dict]:
        """The tools as the templates take them (OpenAI's {"type": "function", "function": {...}})."""
        return [t.model_dump(exclude_none=True) for t in self.tools or []]

    def forced_tool(self) -> str | None:
        """check_tools on this request: the forced function's name, "" (any), None (the model's choice)."""
        choice = self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        return check_tools([t["function"] for t in self.tool_specs()], choice)

    def requested_tokens(self) -> int | None:
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise APIError(400, "give max_tokens or max_completion_tokens, not two different values",
                           param="max_completion_tokens", code="invalid_value")
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def conversation(self) -> list[dict]:
        """The messages as tunelab's templates take them: system / developer messages joined into
        one leading system message, the others in OpenAI's shape (check_conversation)."""
        for i, m in enumerate(self.messages):
            if m.content is None and not (m.role == "assistant" and m.tool_calls):
                raise APIError(400, f"a '{m.role}' message needs 'content'", param=f"messages.{i}.content",
                               code="missing_required_parameter")
        system = [m.text() for m in self.messages if m.role in ("system", "developer")]
        every = [openai_message(m) for m in self.messages]
        check_conversation(every)  # indices in its 400s count every message
        turns = [m for m in every if m["role"] not in ("system", "developer")]
        return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + turns


class Citation(Response):
    """One retrieved passage: its rank, where it comes from and its text."""

    index: int
    source: str
    section: str | None = None
    text: str
    similarity: float
    start: int
    end: int


class ReplyFunction(Response):
    name: str
    arguments: str


class ReplyToolCall(Response):
    id: str
    type: Literal["function"] = "function"
    function: ReplyFunction


class AssistantMessage(Response):
    OMIT_NONE = ("tool_calls", "reasoning_content")
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ReplyToolCall] | None = None
    reasoning_content: str | None = None


class ChatChoice(Response):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(Response):
    OMIT_NONE = ("citations", "cited_by")
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation] | None = None
    cited_by: Literal["model", "added", "none"] | None = None


class DeltaFunction(Response):
    OMIT_NONE = ("name", "arguments")
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(Response):
    """A call's first delta has index, id, type and function.name (arguments ""); later ones index and
    an arguments fragment; the fragments of one index, joined, are its arguments."""

    OMIT_NONE = ("id", "type")
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction


class Delta(Response):
    OMIT_NONE = ("role", "content", "reasoning_content", "tool_calls")
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(Response):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(Response):
    """One `data:` line of a stream; the last one (stream_options.include_usage) has no choices, only usage."""

    OMIT_NONE = ("citations", "usage", "cited_by")
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None
    cited_by: Literal["model", "added", "none"] | None = None
