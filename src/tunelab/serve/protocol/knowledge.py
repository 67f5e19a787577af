"""Knowledge bases (the Studio's `/studio/api/kbs`): a tenant's list, and what creating one reports.
The create request is a multipart form (name, files), read in serve/knowledge.py."""

from __future__ import annotations

from typing import Literal

from tunelab.serve.protocol.common import Deleted, Response


class KnowledgeBase(Response):
    name: str
    files: int
    chunks: int


class KnowledgeBaseList(Response):
    object: Literal["list"] = "list"
    data: list[KnowledgeBase]


class KnowledgeBaseCreated(KnowledgeBase):
    seconds: float


class KnowledgeBaseDeleted(Deleted):
    object: Literal["knowledge_base"] = "knowledge_base"


class DocumentDeleted(Deleted):
    """One document gone; `knowledge_base_deleted`: it was the last one, so the knowledge base went too."""

    object: Literal["knowledge_base.document"] = "knowledge_base.document"
    knowledge_base_deleted: bool
