"""What every route's models share: the base classes, OpenAI's list envelopes and error body, and
`json_body(Model)`, the dependency that reads a JSON body into a request model itself (for the
routes whose refusals keep their own messages; see jobs.py).

    Request            strict (a wrong type is a 400, never coerced), unknown fields kept for the
                       model to judge (inference: refused or ignored; jobs: refused)
    Response           an OpenAI object as the server sends it; `OMIT_NONE` names the optional keys
                       that are left out rather than sent as null (a model's `parent`, `citations`)
    Page[T]            {object: list, data, has_more, first_id, last_id} (files, jobs, events, checkpoints)
"""

from __future__ import annotations

from typing import ClassVar, Generic, Literal, TypeVar

from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Response(BaseModel):
    """An object the server sends. Extra keys are kept (as the openai SDK's own types do)."""

    model_config = ConfigDict(extra="allow")
    OMIT_NONE: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit(self, handler):
        out = handler(self)
        for key in self.OMIT_NONE:
            if isinstance(out, dict) and out.get(key, 0) is None:
                del out[key]
        return out


class Page(Response, Generic[T]):
    """OpenAI's cursor page."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, data: list, has_more: bool):
        return cls(data=data, has_more=has_more, first_id=data[0].id if data else None,
                   last_id=data[-1].id if data else None)


class Deleted(Response):
    id: str
    object: str
    deleted: bool


class ErrorDetail(BaseModel):
    message: str
    type: str | None
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """{"error": {message, type, param, code}}: every 4xx and 5xx (serve/errors.py)."""

    error: ErrorDetail


async def read_json(request: HTTPRequest):
    """The request's body parsed as JSON (any JSON value); a body that is not JSON is a 400 invalid_body."""
    from tunelab.serve.errors import APIError

    try:
        return await request.json()
    except ValueError:
        raise APIError(400, "the request body is not valid JSON", code="invalid_body") from None


def json_body(model: type[BaseModel]):
    """A FastAPI dependency: the request's JSON body read (`read_json`), then validated as `model`. The
    model's own checks raise APIError with their messages; whatever else pydantic refuses is a 400
    through the app's RequestValidationError handler, as for a body FastAPI reads itself."""

    async def read(request: HTTPRequest):
        raw = await read_json(request)
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None

    return read
