"""Contextual chunks: the short context written above each chunk before embedding and BM25 indexing.

A chunk alone ("Use the shutil module...") often lacks the words a question uses; the page it sits
on and its section name carry them. One `ContextStyle` per `--context` value:

    none          the chunk text only
    path          "<section path>\\n<text>"                 (the section path starts with the page
                                                              title when the page has one; the
                                                              pre-contextual `--headings` behaviour)
    title+path    "<title> (<file stem>)\\n<section path>\\n<text>": the page title once (the path
                  loses it when it starts with it), the file stem ("_" and "-" read as spaces) in
                  brackets unless the title already holds it; a page without headings (txt, pdf)
                  has its file stem as title

A one-line `summary`, when a caller passes one, goes above the text.
`search_text` (BM25) and the embedded text are the same string, so both searches see the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class ContextStyle:
    name: str
    header: Callable[[str, str, str], list[str]]  # (title, source, section path) -> header lines
    extra_tokens: int  # window added to the chunk size when embedding (the header's usual length)


def _stem(source: str) -> str:
    name = PurePosixPath(source).name
    for ext in (".rst.txt", ".markdown", ".html", ".htm", ".text", ".rst", ".txt", ".md", ".pdf"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _title_path(title: str, source: str, path: str) -> list[str]:
    stem = _stem(source).replace("_", " ").replace("-", " ")
    head = stem if not title else title if stem.lower() in title.lower() else f"{title} ({stem})"
    if path == title or path.startswith(title + " > "):
        path = path[len(title):].removeprefix(" > ")
    return [head] + ([path] if path else [])


STYLES: dict[str, ContextStyle] = {s.name: s for s in (
    ContextStyle("none", lambda title, source, path: [], 0),
    ContextStyle("path", lambda title, source, path: [path] if path else [], 32),
    ContextStyle("title+path", _title_path, 48),
)}
DEFAULT_CONTEXT = "title+path"


def style(name: str) -> ContextStyle:
    """The `ContextStyle` called `name`; TunelabError naming the choices otherwise."""
    if name not in STYLES:
        raise TunelabError(f"unknown context {name!r}", where="--context", hint=f"one of: {', '.join(STYLES)}")
    return STYLES[name]


def contextual_text(text: str, *, title: str, source: str, section_path: str, context: str = DEFAULT_CONTEXT,
                    summary: str | None = None) -> str:
    """The string embedded and BM25-indexed for one chunk: header lines, optional summary, the text."""
    lines = style(context).header(title, source, section_path)
    if summary:
        lines.append(summary.strip())
    return "\n".join(lines + [text])
