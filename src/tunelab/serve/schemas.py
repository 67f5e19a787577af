"""Request bodies of the inference endpoints, validated strictly (a wrong type is a 400, never coerced).

Accepted and used: model, messages / prompt / input, temperature [0, 2], top_p (0, 1],
max_tokens and max_completion_tokens in [1, state.max_tokens_cap], stop (a string or up to 4),
seed, stream, stream_options.include_usage, n = 1, and the extensions knowledge_base (a name)
and knowledge_base_k [1, 20]. Accepted and ignored: user, metadata, store, logit_bias = {},
frequency/presence_penalty = 0, logprobs false, parallel_tool_calls, service_tier.
Anything else (tools, response_format other than text, logprobs, audio, ...) is a 400 naming it:
the server does not pretend to honour a field it does not implement.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tunelab.serve.errors import APIError

IGNORED = {"user", "metadata", "store", "parallel_tool_calls", "service_tier", "logit_bias",
           "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "echo", "best_of",
           "suffix", "response_format", "prediction", "reasoning_effort", "modalities"}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    def refuse_unknown(self) -> None:
        """400 for a field this server does not implement (see the module docstring)."""
        extra = dict(self.model_extra or {})
        for key, value in extra.items():
            if key not in IGNORED:
                raise APIError(400, f"unsupported parameter '{key}'", param=key, code="unsupported_parameter")
            if not _harmless(key, value):
                raise APIError(400, f"unsupported value for '{key}': {value!r}", param=key,
                               code="unsupported_value")


def _harmless(key: str, value) -> bool:
    if key in ("frequency_penalty", "presence_penalty"):
        return value in (0, 0.0, None)
    if key in ("logprobs", "echo"):
        return value in (False, None)
    if key in ("top_logprobs", "suffix", "prediction", "reasoning_effort", "modalities"):
        return value is None
    if key == "best_of":
        return value in (1, None)
    if key == "logit_bias":
        return value in ({}, None)
    if key == "response_format":
        return value is None or value == {"type": "text"}
    return True


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise APIError(400, "'stop' is a string or a list of at most 4 non-empty strings (<= 256 chars)",
                           param="stop", code="invalid_value")
        return stops

    def check(self, cap: int, max_tokens_param: str = "max_tokens") -> int | None:
        """The requested token budget (None: up to the cap), after every range check."""
        self.refuse_unknown()
        if self.n not in (None, 1):
            raise APIError(400, "only n = 1 is supported", param="n", code="invalid_value")
        if self.seed is not None and not -2**63 <= self.seed < 2**63:
            raise APIError(400, "'seed' must fit in 64 bits", param="seed", code="invalid_value")
        n = self.requested_tokens()
        if n is not None and not 1 <= n <= cap:
            raise APIError(400, f"'{max_tokens_param}' must be between 1 and {cap} (got {n})",
                           param=max_tokens_param, code="invalid_value")
        self.stops()
        return n

    def requested_tokens(self) -> int | None:
        return self.max_tokens


class ChatRequest(_Sampling):
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

    def conversation(self) -> list[dict]:
        """The messages as tunelab's templates take them: system / developer messages joined into
        one leading system message; the last message must be the user's."""
        system = [m.text() for m in self.messages if m.role in ("system", "developer")]
        turns = [{"role": m.role, "content": m.text()} for m in self.messages if m.role in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user":
            raise APIError(400, "the last message must be the user's (role 'user')", param="messages",
                           code="invalid_value")
        return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + turns


class CompletionRequest(_Sampling):
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


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts or len(texts) > 2048:
            raise APIError(400, "'input' is a string or a list of 1 to 2048 strings", param="input",
                           code="invalid_value")
        if any(not t for t in texts):
            raise APIError(400, "'input' strings must not be empty", param="input", code="invalid_value")
        return texts
