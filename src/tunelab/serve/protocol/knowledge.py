"""Knowledge bases (the Studio's `/studio/api/kbs`): a tenant's list, and what creating one reports.
The create request is a multipart form (name, files), read in serve/knowledge.py."""

from __future__ import annotations

from typing import Literal

from tunelab.serve.protocol.common import Response


class KnowledgeBase(Response):
    name: str
    files: int
    chunks: int


class KnowledgeBaseList(Response):
    object: Literal["list"] = "list"
    data: list[KnowledgeBase]


class KnowledgeBaseCreated(KnowledgeBase):
    seconds: float
