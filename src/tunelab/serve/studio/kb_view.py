"""Knowledge bases: list, create from uploaded documents, documents and chunks of one.

    GET  /studio/api/kbs            {"data": [{"name", "files", "chunks"}]}: the tenant's knowledge bases
    GET  /studio/f/kbs              the same as a table
    POST /studio/api/kbs            multipart: name, files (txt, md, rst, html, pdf; the upload limit, 64 MiB)
                                    -> the documents are kept in <home>/kb-docs/<tenant>/<name>/ and that
                                    folder is indexed (tunelab.rag.indexer.index, MiniLM) into the tenant's
                                    KB folder (serve/embeddings.kb_root): what chat completions with
                                    `knowledge_base` read. Uploading again to a name adds or replaces documents.
    DELETE /studio/api/kbs/NAME     the knowledge base and its uploaded documents -> {"id", "object", "deleted"}
    DELETE /studio/api/kbs/NAME/documents/SOURCE   one document (its chunks too); the knowledge base goes
                                    with its last one -> {"id", "object", "deleted", "knowledge_base_deleted"}
(the logic is serve/knowledge.py's ServingKnowledge; these routes are thin)

    GET  /studio/f/kbs/NAME         its documents (chunks each) and every chunk (up to 2000), each chunk
                                    with the anchor `chunk_anchor(source, start, end)` that citations link to
"""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.knowledge import MAX_CHUNKS, ServingKnowledge
from tunelab.serve.names import check_name
from tunelab.serve.protocol.knowledge import (
    DocumentDeleted,
    KnowledgeBaseCreated,
    KnowledgeBaseDeleted,
    KnowledgeBaseList,
)
from tunelab.serve.studio.html import esc, table

router = APIRouter()
__all__ = ["MAX_CHUNKS", "chunk_anchor", "router"]


def chunk_anchor(source: str, start: int, end: int) -> str:
    """`c-START-END-SOURCE` with every character of SOURCE outside [A-Za-z0-9] as '_' (studio.js builds
    the same from a citation)."""
    return f"c-{start}-{end}-" + re.sub(r"[^A-Za-z0-9]", "_", source)


def _kbs(request: Request, tenant: str) -> ServingKnowledge:
    return ServingKnowledge(request.app.state.tl, tenant)


@router.get("/studio/api/kbs")
def kbs_json(request: Request, tenant: str = Depends(current_tenant)) -> KnowledgeBaseList:
    return _kbs(request, tenant).list()


@router.get("/studio/f/kbs", response_class=HTMLResponse)
def kbs_fragment(request: Request, tenant: str = Depends(current_tenant)):
    kbs = _kbs(request, tenant).list().data
    if not kbs:
        return '<p class="muted">No knowledge base yet: create one above.</p>'
    return table(["knowledge base", "documents", "chunks"],
                 [[f'<a href="/kb/{esc(k.name)}">{esc(k.name)}</a>', str(k.files), str(k.chunks)] for k in kbs])


@router.post("/studio/api/kbs")
async def create_kb(request: Request, tenant: str = Depends(current_tenant)) -> KnowledgeBaseCreated:
    """multipart: name, files (a form, not JSON: read here, indexed by ServingKnowledge.create)."""
    try:
        form = await request.form()
    except Exception as e:  # noqa: BLE001 - not multipart, a broken body: python-multipart's errors vary
        raise APIError(400, f"could not read the multipart form: {e}", code="invalid_body") from None
    try:
        name = form.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, "Missing required parameter: 'name'", param="name", code="missing_required_parameter")
        check_name(name, "name")
        files = [f for f in form.getlist("files") if not isinstance(f, str)]
        if not files:
            raise APIError(400, "Missing required parameter: 'files' (one or more documents)", param="files",
                           code="missing_required_parameter")
        uploads = [(f.filename, await f.read()) for f in files]
    finally:
        await form.close()
    return await run_in_threadpool(_kbs(request, tenant).create, name, uploads)


@router.delete("/studio/api/kbs/{name}")
async def delete_kb(request: Request, name: str, tenant: str = Depends(current_tenant)) -> KnowledgeBaseDeleted:
    return await run_in_threadpool(_kbs(request, tenant).delete, name)


@router.delete("/studio/api/kbs/{name}/documents/{source:path}")
async def delete_kb_document(request: Request, name: str, source: str,
                             tenant: str = Depends(current_tenant)) -> DocumentDeleted:
    return await run_in_threadpool(_kbs(request, tenant).delete_document, name, source)


@router.get("/studio/f/kbs/{name}", response_class=HTMLResponse)
async def kb_fragment(request: Request, name: str, tenant: str = Depends(current_tenant)):
    chunks = await run_in_threadpool(_kbs(request, tenant).chunks, name)
    per_doc: dict[str, int] = {}
    for c in chunks:
        per_doc[c["source"]] = per_doc.get(c["source"], 0) + 1
    base = f"/studio/api/kbs/{quote(name)}"
    docs = table(["document", "chunks", ""], [
        [esc(s), str(n), f'<button type="button" data-kb-delete="{esc(base)}/documents/{esc(quote(s))}" '
                         f'data-confirm="Delete {esc(s)} from {esc(name)}?">Delete</button>']
        for s, n in per_doc.items()])
    docs += (f'<p><button type="button" data-kb-delete="{esc(base)}" data-confirm="Delete the knowledge base '
             f'{esc(name)} and its documents?">Delete this knowledge base</button> '
             f'<span class="err" role="alert" id="kb-delete-err"></span></p>')
    items = "".join(
        f'<li id="{esc(chunk_anchor(c["source"], c["start"], c["end"]))}" tabindex="-1"><p class="src">'
        f'<b>{esc(c["source"])}</b>{" § " + esc(c["section"]) if c["section"] else ""} <small>chars '
        f'{c["start"]}–{c["end"]}, {c["n_tokens"]} tokens</small></p><p>{esc(c["text"])}</p></li>' for c in chunks)
    return (f'<section aria-labelledby="h-docs"><h2 id="h-docs">Documents</h2>{docs}</section>'
            f'<section aria-labelledby="h-chunks"><h2 id="h-chunks">Chunks ({len(chunks)})</h2>'
            f'<ol class="chunks">{items}</ol></section>')
