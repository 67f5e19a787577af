"""`POST /v1/embeddings`: float lists, or base64 little-endian float32 (what the openai client asks for)."""

from __future__ import annotations

from typing import Literal

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response
from tunelab.serve.protocol.sampling import StrictRequest


class EmbeddingRequest(StrictRequest):
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


class Embedding(Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
