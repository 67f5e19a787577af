"""`POST /v1/chat/completions`: the request, the reply and its stream chunks, in OpenAI's shapes.

The extensions: `knowledge_base` (a name) and `knowledge_base_k` [1, 20] on the request; the reply
(and the first chunk of a stream) then carries `citations` (serve/embeddings.py), else leaves it out.
With a knowledge base the reply also carries `cited_by` ("model": the answer cites a passage [n];
"added": it cited none, so a `Sources: ...` line was appended to the content; "none": no passage
matched), on the last chunk of a stream (the one with `finish_reason`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response
from tunelab.serve.protocol.sampling import SamplingRequest, StrictRequest, Usage

FinishReason = Literal["stop", "length"]


class TextPart(StrictRequest):
    type: Literal["text"]
    text: str


class Message(StrictRequest):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(SamplingRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    knowledge_base: str | None = None
    knowledge_base_k: int | None = Field(default=None, ge=1, le=20)

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
        one leading system message; the last message must be the user's."""
        system = [m.text() for m in self.messages if m.role in ("system", "developer")]
        turns = [{"role": m.role, "content": m.text()} for m in self.messages if m.role in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user":
            raise APIError(400, "the last message must be the user's (role 'user')", param="messages",
                           code="invalid_value")
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


class AssistantMessage(Response):
    role: Literal["assistant"] = "assistant"
    content: str | None


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


class Delta(Response):
    OMIT_NONE = ("role", "content")
    role: Literal["assistant"] | None = None
    content: str | None = None


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
