"""`GET /v1/models` and `GET /v1/models/{id}`: the base, the caller's finished runs (`parent`: the
base; left out for the base and the embedders), the embedders."""

from __future__ import annotations

from typing import Literal

from tunelab.serve.protocol.common import Response


class Model(Response):
    OMIT_NONE = ("parent",)
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    parent: str | None = None


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[Model]
