"""`POST /v1/completions` (the legacy text endpoint): one prompt, a string or token ids."""

from __future__ import annotations

from typing import Literal

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response
from tunelab.serve.protocol.sampling import SamplingRequest, Usage


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]

    def prompts(self) -> list:
        """One prompt: a string or token ids (a list of one string or one id list is unwrapped)."""
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise APIError(400, "one prompt per request (a list of several is not supported)",
                               param="prompt", code="invalid_value")
            p = p[0]
        if isinstance(p, (str, list)) and len(p) == 0:
            raise APIError(400, "the prompt is empty", param="prompt", code="empty_prompt")
        return p


class CompletionChoice(Response):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class Completion(Response):
    """The reply, and (without usage, `object` the same) each chunk of a stream."""

    OMIT_NONE = ("usage",)
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
