"""Knowledge bases: list, create from uploaded documents, documents and chunks of one.

    GET  /studio/api/kbs            {"data": [{"name", "files", "chunks"}]}: the tenant's knowledge bases
    GET  /studio/f/kbs              the same as a table
    POST /studio/api/kbs            multipart: name, files (txt, md, rst, html, pdf; the upload limit, 64 MiB)
                                    -> the documents are kept in <home>/kb-docs/<tenant>/<name>/ and that
                                    folder is indexed (tunelab.rag.indexer.index, MiniLM) into the tenant's
                                    KB folder (serve/embeddings.kb_root): what chat completions with
                                    `knowledge_base` read. Uploading again to a name adds or replaces documents.
    GET  /studio/f/kbs/NAME         its documents (chunks each) and every chunk (up to 2000), each chunk
                                    with the anchor `chunk_anchor(source, start, end)` that citations link to
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.serve.auth import current_tenant
from tunelab.serve.embeddings import kb_root
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.names import check_name, inside, safe_filename
from tunelab.serve.studio.html import esc, table

router = APIRouter()
MAX_CHUNKS = 2000


def chunk_anchor(source: str, start: int, end: int) -> str:
    """`c-START-END-SOURCE` with every character of SOURCE outside [A-Za-z0-9] as '_' (studio.js builds
    the same from a citation)."""
    return f"c-{start}-{end}-" + re.sub(r"[^A-Za-z0-9]", "_", source)


def kb_folder(state, tenant: str, name: str) -> Path:
    check_name(name, "knowledge_base")
    root = kb_root(state, tenant)
    return inside(root, name) if root.exists() else root / name


def list_kbs(state, tenant: str) -> list[dict]:
    import json

    root = kb_root(state, tenant)
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.name.startswith(".") or not (p / "manifest.json").is_file():
            continue
        try:
            files = json.loads((p / "manifest.json").read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError):
            files = {}
        out.append({"name": p.name, "files": len(files), "chunks": sum(int(f.get("chunks", 0)) for f in files.values())})
    return out


@router.get("/studio/api/kbs")
def kbs_json(request: Request, tenant: str = Depends(current_tenant)):
    return {"object": "list", "data": list_kbs(request.app.state.tl, tenant)}


@router.get("/studio/f/kbs", response_class=HTMLResponse)
def kbs_fragment(request: Request, tenant: str = Depends(current_tenant)):
    kbs = list_kbs(request.app.state.tl, tenant)
    if not kbs:
        return '<p class="muted">No knowledge base yet: create one above.</p>'
    return table(["knowledge base", "documents", "chunks"],
                 [[f'<a href="/kb/{esc(k["name"])}">{esc(k["name"])}</a>', str(k["files"]), str(k["chunks"])]
                  for k in kbs])


def build_kb(state, tenant: str, name: str, uploads: list[tuple[str, bytes]]) -> dict:
    """Store the documents and index them (blocking)."""
    from tunelab.rag.indexer import index
    from tunelab.rag.ingest import format_of

    folder = kb_folder(state, tenant, name)
    docs = state.home / "kb-docs" / tenant / name
    names = []
    for raw, _ in uploads:
        fname = safe_filename(raw or "")
        if format_of(Path(fname)) is None:
            raise APIError(400, f"{fname}: not a document tunelab reads (txt, md, rst, html, pdf)", param="files",
                           code="invalid_file_format")
        names.append(fname)
    docs.mkdir(parents=True, exist_ok=True)
    for fname, (_, data) in zip(names, uploads):
        tmp = docs / f".{fname}.part"
        tmp.write_bytes(data)
        tmp.replace(docs / fname)
    try:
        rep = index([docs], directory=folder)
    except TunelabError as e:
        raise APIError(400, f"knowledge base '{name}': {e.one_line()}", param="files", code="index_failed") from None
    return {"name": name, "files": rep.files, "chunks": rep.chunks_total, "seconds": round(rep.seconds, 2)}


@router.post("/studio/api/kbs")
async def create_kb(request: Request, tenant: str = Depends(current_tenant)):
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
    return await run_in_threadpool(build_kb, request.app.state.tl, tenant, name, uploads)


def _chunks(folder: Path) -> list[dict]:
    from tunelab.rag.store import KnowledgeBase

    kb = KnowledgeBase.open(directory=folder)
    if kb.table is None:
        return []
    cols = ["source", "section", "start", "end", "n_tokens", "text"]
    rows = kb.table.search().select(cols).limit(MAX_CHUNKS).to_list()
    return sorted(rows, key=lambda r: (r["source"], r["start"]))


@router.get("/studio/f/kbs/{name}", response_class=HTMLResponse)
async def kb_fragment(request: Request, name: str, tenant: str = Depends(current_tenant)):
    folder = kb_folder(request.app.state.tl, tenant, name)
    if not (folder / "manifest.json").is_file():
        raise not_found("knowledge_base", name, "knowledge_base")
    chunks = await run_in_threadpool(_chunks, folder)
    per_doc: dict[str, int] = {}
    for c in chunks:
        per_doc[c["source"]] = per_doc.get(c["source"], 0) + 1
    docs = table(["document", "chunks"], [[esc(s), str(n)] for s, n in per_doc.items()])
    items = "".join(
        f'<li id="{esc(chunk_anchor(c["source"], c["start"], c["end"]))}" tabindex="-1"><p class="src">'
        f'<b>{esc(c["source"])}</b>{" § " + esc(c["section"]) if c["section"] else ""} <small>chars '
        f'{c["start"]}–{c["end"]}, {c["n_tokens"]} tokens</small></p><p>{esc(c["text"])}</p></li>' for c in chunks)
    return (f'<section aria-labelledby="h-docs"><h2 id="h-docs">Documents</h2>{docs}</section>'
            f'<section aria-labelledby="h-chunks"><h2 id="h-chunks">Chunks ({len(chunks)})</h2>'
            f'<ol class="chunks">{items}</ol></section>')
