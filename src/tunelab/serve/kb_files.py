"""A knowledge base's documents on disk: written so that a failed request leaves nothing behind, and deleted.

    add_documents(docs, folder, files, reindex)
        docs     <home>/kb-docs/<tenant>/<name>/, the uploaded documents (0700 folders, 0600 files)
        folder   the knowledge base itself, under the tenant's KB root (the root made 0700)
        Each document is checked first (read and cleaned as the indexer will: an unreadable PDF is
        refused before anything is written), then written to a temp name and renamed over its final name
        (a document it replaces is moved aside first), then `reindex()` runs. If anything fails, the
        documents are put back as they were, a docs folder or KB folder this call made is removed, and the
        error goes on: a refused upload never stays behind to break the next one.
    delete_document(docs, folder, source)  one document: its file, its chunks, its manifest entry; the
                                           knowledge base goes with its last document
    delete_kb(docs, folder)                the knowledge base and its documents (each folder renamed to a
                                           hidden name first, then removed: gone at once for every reader)

One lock per knowledge base folder: two requests never write one knowledge base at the same time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Callable, TypeVar

from tunelab.serve.private import private_dir, write_private

T = TypeVar("T")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def lock(folder: Path) -> threading.Lock:
    key = str(Path(folder).absolute())
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def check_document(name: str, data: bytes) -> None:
    """Raise the indexer's TunelabError, named by `name`, for a document it could not read (written to a
    private temp folder, read, removed)."""
    import tempfile

    from tunelab.errors import TunelabError
    from tunelab.rag.ingest import read_document

    with tempfile.TemporaryDirectory(prefix="tunelab-kbdoc-") as tmp:
        p = Path(tmp) / name
        write_private(p, data)
        try:
            read_document(str(p))
        except TunelabError as e:  # named by its upload name, never by a server path
            raise TunelabError(e.message, where=name, hint=e.hint) from None


def _remove_tree(path: Path) -> None:
    """Rename `path` to a hidden sibling, then remove it (readers see it gone at once)."""
    if not path.exists():
        return
    trash = path.with_name(f".deleted-{path.name}-{secrets.token_hex(4)}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _made(path: Path) -> list[Path]:
    """The folders from `path` up that do not exist yet (outermost last)."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def add_documents(docs: Path, folder: Path, files: list[tuple[str, bytes]], reindex: Callable[[], T]) -> T:
    """Write `files` (name, bytes) into `docs` and run `reindex()`, all or nothing (module docstring)."""
    for name, data in files:
        check_document(name, data)
    with lock(folder):
        new_docs, new_kb = _made(docs), _made(folder)
        token = secrets.token_hex(4)
        moved: list[tuple[Path, Path | None]] = []  # (final, its previous content moved aside, or None)
        try:
            private_dir(docs)
            private_dir(folder.parent)
            for name, data in files:
                final, tmp = docs / name, docs / f".{name}.part-{token}"
                write_private(tmp, data)
                aside = None
                if final.exists():
                    aside = docs / f".{name}.old-{token}"
                    os.replace(final, aside)
                moved.append((final, aside))
                os.replace(tmp, final)
            result = reindex()
        except BaseException:
            for final, aside in reversed(moved):
                final.unlink(missing_ok=True)
                if aside is not None:
                    os.replace(aside, final)
            for p in docs.glob(f".*.part-{token}") if docs.is_dir() else ():
                p.unlink(missing_ok=True)
            for made in (new_kb, new_docs):
                if made:
                    shutil.rmtree(made[-1], ignore_errors=True)
            raise
        for _, aside in moved:
            if aside is not None:
                aside.unlink(missing_ok=True)
        return result


def delete_kb(docs: Path, folder: Path) -> None:
    with lock(folder):
        _remove_tree(folder)
        _remove_tree(docs)


def delete_document(docs: Path, folder: Path, source: str) -> bool:
    """Remove document `source` (as the knowledge base lists it); False if it holds no such document.
    The knowledge base goes with its last document."""
    from tunelab.rag.store import KnowledgeBase

    with lock(folder):
        kb = KnowledgeBase.open(directory=folder)
        paths = [p for p, f in kb.files.items() if f.get("source") == source]
        if not paths:
            return False
        for p in paths:  # the file first: if what follows fails, the next indexing pass sees it gone
            path = Path(p)
            if path.parent.resolve() == docs.resolve() or docs.resolve() in path.resolve().parents:
                path.unlink(missing_ok=True)
        if len(paths) == len(kb.files):
            _remove_tree(folder)
            _remove_tree(docs)
            return True
        kb.delete_paths(paths)
        for p in paths:
            kb.files.pop(p, None)
        kb.refresh_indexes()
        kb.save_manifest()
        return True
