"""Build or update a knowledge base from documents: `index(docs, kb="name")`.

The KB mirrors `docs` (files and folders, searched recursively for supported extensions):

    new file            read, clean, chunk, embed, add
    changed file        (sha256 of its bytes differs) old chunks deleted, re-embedded
    unchanged file      nothing (no reading, no embedding)
    file gone           (in the KB but no longer among `docs`) its chunks deleted

Page furniture (navigation lists, Next/Previous bars, breadcrumbs: `furniture.furniture_blocks`)
is dropped while reading unless `furniture=False`; `IndexReport.furniture_dropped` counts it
for the files read in this call.

With `sentences=True` every chunk's sentences are embedded too (rag/sentences.py: queries then mix
the chunk's cosine with its best sentence's), for the same files as the chunks.

Changing the embedder, chunk size, overlap, context, drop patterns, furniture or sentences, or a tunelab release
that cleans documents differently (`INGEST_VERSION`), rebuilds everything. All new chunks of a run are embedded in one length-sorted
pass, so a handful of changed files costs seconds.

Raises:
    TunelabError: a path that does not exist, or no supported file among `docs`.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.rag.chunk import chunk_document
from tunelab.rag.context import DEFAULT_CONTEXT, contextual_text, style
from tunelab.rag.embedders import kb_embedder
from tunelab.rag.ingest import DEFAULT_DROP, INGEST_VERSION, format_of, read_document
from tunelab.rag.sentences import SentenceIndex, sentence_rows
from tunelab.rag.store import KnowledgeBase, kb_dir


@dataclass
class IndexReport:
    kb: str
    files: int
    added: int
    changed: int
    unchanged: int
    removed: int
    chunks_embedded: int
    chunks_total: int
    seconds: float
    stages: dict | None = None
    sentences: int | None = None  # sentence vectors the KB holds after this call (None: not kept, or unchanged)
    furniture_dropped: int = 0  # navigation blocks / HTML navigation elements dropped from the files read  # seconds per stage: read_chunk, embed, store (+ indexes)

    def to_dict(self) -> dict:
        return asdict(self)


def find_files(docs: list[str | Path]) -> dict[str, str]:
    """Supported files under `docs`: absolute path -> display source (relative to its folder argument)."""
    found: dict[str, str] = {}
    for d in docs:
        p = Path(d).expanduser()
        if not p.exists():
            raise TunelabError("no such file or folder", where=str(d))
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and format_of(f) and not any(part.startswith(".") for part in f.relative_to(p).parts):
                    found[str(f.resolve())] = f.relative_to(p).as_posix()
        elif format_of(p) is None:
            raise TunelabError("unsupported file type (txt, md, rst, html, pdf)", where=str(d))
        else:
            found[str(p.resolve())] = p.name
    if not found:
        raise TunelabError("no supported documents found (txt, md, rst, html, pdf)", where=" ".join(map(str, docs)))
    return found


def _has_title(doc) -> bool:
    """Does the document name itself (a first heading), rather than `Document.title` falling back to the file name?"""
    return any(b.section_path for b in doc.blocks)


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index(docs: list[str | Path], kb: str | None = None, *, directory: str | Path | None = None,
          embedder: str = "minilm-l6", size: int = 256, overlap: int = 25,
          drop: list[str] | None = None, headings: bool = True, batch_size: int = 32,
          furniture: bool = True, context: str | None = None, sentences: bool = False, log=None) -> IndexReport:
    """Index `docs` into knowledge base `kb` (or folder `directory`); see the module docstring.

    `context` (tunelab.rag.context: none | path | title+path, default title+path) is written above
    each chunk for embedding and BM25; `headings=False` alone means context "none". `sentences`: keep a
    vector per sentence too (rag/sentences.py)."""
    t0 = time.perf_counter()
    context = context or (DEFAULT_CONTEXT if headings else "none")
    ctx = style(context)
    where = kb_dir(kb, directory)  # validates the name before any work
    files = find_files(docs)
    drop_patterns = list(DEFAULT_DROP if drop is None else drop)
    for pat in drop_patterns:
        try:
            re.compile(pat)
        except re.error as e:
            raise TunelabError(f"invalid drop pattern {pat!r} ({e})", where="--drop") from e
    settings = {"embedder": embedder, "chunk_size": size, "overlap": overlap, "context": context,
                "drop": drop_patterns, "furniture": furniture, "ingest_version": INGEST_VERSION,
                "sentences": True if sentences else None}  # None: a KB from before the option matches
    store = KnowledgeBase.open_or_create(where, settings)
    known = store.files
    hashes = {p: file_hash(p) for p in files}
    gone = [p for p in known if p not in files]
    todo = [p for p in files if known.get(p, {}).get("hash") != hashes[p]]
    changed = [p for p in todo if p in known]

    emb = kb_embedder(store.manifest, store.dir) if todo else None  # nothing changed: no model load; a tuned KB's own
    if emb is not None:
        store.manifest["dim"] = emb.dim
    rows: list[dict] = []
    per_file: dict[str, int] = {}
    furniture_dropped = 0
    t1 = time.perf_counter()
    for p in todo:
        doc = read_document(p, drop=drop_patterns, furniture=furniture)
        furniture_dropped += doc.furniture
        chunks = chunk_document(doc, emb.tokenizer, size=size, overlap=overlap)
        per_file[p] = len(chunks)
        for c in chunks:
            search = contextual_text(c.text, title=doc.title if _has_title(doc) else "", source=files[p],
                                     section_path=c.section_path, context=context)
            rows.append({
                "id": hashlib.sha1(f"{p}:{c.start}:{c.end}".encode()).hexdigest()[:16],
                "source": files[p], "path": p, "section": c.section, "section_path": c.section_path,
                "start": c.start, "end": c.end, "n_tokens": c.n_tokens, "text": c.text,
                "search_text": search, "file_hash": hashes[p], "_embed": search,
            })
    if log:
        log(f"{len(todo)} file(s) to embed ({len(rows)} chunks), {len(files) - len(todo)} unchanged, {len(gone)} removed")
    t2 = time.perf_counter()
    texts = [r.pop("_embed") for r in rows]
    window = size + 2 + ctx.extra_tokens  # + [CLS]/[SEP] + the context lines
    vectors = emb.encode(texts, batch_size=batch_size, max_tokens=window) if emb is not None else []
    for r, v in zip(rows, vectors):
        r["vector"] = v.tolist()

    t3 = time.perf_counter()
    n_sentences = None
    if sentences and (todo or gone):  # every sentence of the files redone or removed, then the new ones
        sent = SentenceIndex.load(store.dir, int(store.manifest["dim"])).without_paths(gone + todo)
        s_texts, s_ids, s_paths = sentence_rows(rows)
        if s_texts:
            sent = sent.plus(emb.encode(s_texts, batch_size=batch_size, max_tokens=size + 2), s_texts, s_ids, s_paths)
        n_sentences = len(sent)
    t4 = time.perf_counter()
    store.delete_paths(gone + changed)
    store.add(rows)
    if n_sentences is not None:
        sent.save(store.dir)
    for p in gone:
        known.pop(p, None)
    for p in todo:
        known[p] = {"hash": hashes[p], "source": files[p], "chunks": per_file[p]}
    if todo or gone:
        store.refresh_indexes()
    store.save_manifest()
    return IndexReport(kb=str(kb or store.dir), files=len(files), added=len(todo) - len(changed),
                       changed=len(changed), unchanged=len(files) - len(todo), removed=len(gone),
                       chunks_embedded=len(rows), chunks_total=store.count(),
                       seconds=round(time.perf_counter() - t0, 2), furniture_dropped=furniture_dropped,
                       stages={"load_hash": round(t1 - t0, 2), "read_chunk": round(t2 - t1, 2),
                               "embed": round(t3 - t2, 2), "embed_sentences": round(t4 - t3, 2),
                               "store": round(time.perf_counter() - t4, 2)}, sentences=n_sentences)
