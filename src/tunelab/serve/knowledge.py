"""Knowledge bases of one tenant, for the Studio's `/studio/api/kbs` routes (serve/studio/kb_view.py).

A knowledge base is a folder under the tenant's KB root (serve/embeddings.kb_root), what
`tunelab rag index` writes and chat completions with `knowledge_base` read. Creating one keeps the
uploaded documents in <home>/kb-docs/<tenant>/<name>/ and indexes that folder (tunelab.rag.indexer,
MiniLM); uploading again to a name adds or replaces documents. All or nothing: a failed upload puts
the documents back as they were (serve/kb_files.py). A document, or a whole knowledge base, can be
deleted; the knowledge base goes with its last document.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.serve import kb_files
from tunelab.serve.embeddings import kb_root
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.names import check_name, hide_paths, inside, safe_filename
from tunelab.serve.protocol.knowledge import (
    DocumentDeleted,
    KnowledgeBase,
    KnowledgeBaseCreated,
    KnowledgeBaseDeleted,
    KnowledgeBaseList,
)

MAX_CHUNKS = 2000


class ServingKnowledge:
    def __init__(self, state, tenant: str):
        self.state, self.tenant = state, tenant

    def folder(self, name: str) -> Path:
        check_name(name, "knowledge_base")
        root = kb_root(self.state, self.tenant)
        return inside(root, name) if root.exists() else root / name

    def list(self) -> KnowledgeBaseList:
        root = kb_root(self.state, self.tenant)
        out = []
        for p in sorted(root.iterdir()) if root.is_dir() else []:
            if p.name.startswith(".") or not (p / "manifest.json").is_file():
                continue
            try:
                files = json.loads((p / "manifest.json").read_text(encoding="utf-8")).get("files", {})
            except (OSError, ValueError):
                files = {}
            out.append(KnowledgeBase(name=p.name, files=len(files),
                                     chunks=sum(int(f.get("chunks", 0)) for f in files.values())))
        return KnowledgeBaseList(data=out)

    def create(self, name: str, uploads: list[tuple[str, bytes]]) -> KnowledgeBaseCreated:
        """Store the documents and index them (blocking)."""
        from tunelab.rag.indexer import index
        from tunelab.rag.ingest import format_of

        folder = self.folder(name)
        docs = self.state.home / "kb-docs" / self.tenant / name
        names = []
        for raw, _ in uploads:
            fname = safe_filename(raw or "")
            if format_of(Path(fname)) is None:
                raise APIError(400, f"{fname}: not a document tunelab reads (txt, md, rst, html, pdf)", param="files",
                               code="invalid_file_format")
            names.append(fname)
        try:  # all or nothing: a refused document is never kept (serve/kb_files.py)
            rep = kb_files.add_documents(docs, folder, [(n, d) for n, (_, d) in zip(names, uploads)],
                                         lambda: index([docs], directory=folder))
        except TunelabError as e:  # documents by their names, never by server paths
            msg = e.one_line().replace(str(docs.resolve()) + "/", "").replace(str(docs) + "/", "")
            msg = hide_paths(msg, self.state)
            raise APIError(400, f"knowledge base '{name}': {msg}", param="files", code="index_failed") from None
        return KnowledgeBaseCreated(name=name, files=rep.files, chunks=rep.chunks_total, seconds=round(rep.seconds, 2))

    def docs(self, name: str) -> Path:
        """Where the Studio keeps `name`'s uploaded documents."""
        return self.state.home / "kb-docs" / self.tenant / check_name(name, "knowledge_base")

    def _existing(self, name: str) -> Path:
        folder = self.folder(name)
        if not (folder / "manifest.json").is_file():
            raise not_found("knowledge_base", name, "knowledge_base")
        return folder

    def delete(self, name: str) -> KnowledgeBaseDeleted:
        """Delete knowledge base `name` and its uploaded documents (blocking)."""
        kb_files.delete_kb(self.docs(name), self._existing(name))
        return KnowledgeBaseDeleted(id=name, deleted=True)

    def delete_document(self, name: str, source: str) -> DocumentDeleted:
        """Delete one document (as the knowledge base lists it) of `name`; the knowledge base goes with
        its last document (blocking)."""
        folder = self._existing(name)
        n_before = len(self.list_files(folder))
        if not kb_files.delete_document(self.docs(name), folder, source):
            raise not_found("document", source, "document")
        return DocumentDeleted(id=source, deleted=True, knowledge_base_deleted=n_before == 1)

    @staticmethod
    def list_files(folder: Path) -> dict:
        try:
            return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError):
            return {}

    def chunks(self, name: str) -> list[dict]:
        """Every chunk (up to MAX_CHUNKS) of `name`, by source and position (blocking)."""
        from tunelab.rag.store import KnowledgeBase as Store

        folder = self.folder(name)
        if not (folder / "manifest.json").is_file():
            raise not_found("knowledge_base", name, "knowledge_base")
        kb = Store.open(directory=folder)
        if kb.table is None:
            return []
        cols = ["source", "section", "start", "end", "n_tokens", "text"]
        rows = kb.table.search().select(cols).limit(MAX_CHUNKS).to_list()
        return sorted(rows, key=lambda r: (r["source"], r["start"]))
