"""What chat completions and completions share: the sampling fields, strictly checked.

Accepted and used: model, temperature [0, 2], top_p (0, 1], max_tokens (and chat's
max_completion_tokens) in [1, state.max_tokens_cap], stop (a string or up to 4), seed, stream,
stream_options.include_usage, n = 1. Accepted and ignored: user, metadata, store, logit_bias = {},
frequency/presence_penalty = 0, logprobs false, parallel_tool_calls, service_tier.
Anything else (tools, response_format other than text, logprobs, audio, ...) is a 400 naming it:
the server does not pretend to honour a field it does not implement.
"""

from __future__ import annotations

from pydantic import Field

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Request, Response

IGNORED = {"user", "metadata", "store", "parallel_tool_calls", "service_tier", "logit_bias",
           "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "echo", "best_of",
           "suffix", "response_format", "prediction", "reasoning_effort", "modalities"}


class StrictRequest(Request):
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


class StreamOptions(StrictRequest):
    include_usage: bool = False


class SamplingRequest(StrictRequest):
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

    def max_tokens_param(self) -> str:
        """The field a budget out of range is blamed on."""
        return "max_tokens"

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
