"""Read documents into clean, sectioned paragraphs.

`read_document(path)` returns a `Document`: the cleaned text as a list of `Block`s
(one paragraph, code block or list item each) with the heading path it sits under and its
character offsets in `Document.text` (the blocks joined by blank lines).

    formats   .txt .text          paragraphs split on blank lines, no sections
              .md .markdown       ATX (# Title) and setext (Title / ===) headings
              .rst .rst.txt       underlined / overlined headings (= - ~ ^ " ' ` # * + < >);
                                  directives such as `.. index::`, comments and link targets dropped
              .html .htm          <h1>-<h6> headings; <script> <style> <nav> <header> <footer>
                                  <aside> <form> and <noscript> dropped (navigation / boilerplate)
              .pdf                pypdf text per page; section = "page N"

Cleaning: inline markup is reduced to its text (``code`` -> code, :func:`len` -> len,
[text](url) -> text) and any block matching one of the `drop` regular expressions
(case-insensitive, searched from the block's start) is removed; `DEFAULT_DROP` covers the
usual junk ("Related articles", "Share this", "Skip to content", copyright lines, page numbers).

Page furniture (navigation) is dropped too, unless `furniture=False`; `Document.furniture`
counts what went. In HTML, before any text is kept: `<nav>`, `<header>`, `<footer>`, `<aside>`,
any element with `role="navigation"` (Sphinx's related/sidebar bars), and elements whose class
is a navigation class (`navheader`/`navfooter` of DocBook, `navbar`, `breadcrumb(s)`,
`pagination`, `nav-links`) or a `<table summary="Navigation ...">`. In every format, the
heuristic of `tunelab.rag.furniture.furniture_blocks` (its docstring has the exact rule): a block made of navigation
lines ("Next", "Previous", "Up", "Home" bars; breadcrumbs "Home > Guide > Keys"; table-of-contents
entries "Chapter 11. Data conversion", "2.3. Options"; lists of link-only items) with almost no
sentence punctuation. Ordinary prose and ordinary lists (steps, options) are kept: a line only
counts as navigation by its form (a nav word, a separator bar, a chapter/section number, or
being a whole link), never merely by being short.

Raises:
    TunelabError: unreadable file, unsupported extension, or a PDF pypdf cannot parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.rag.furniture import furniture_blocks
from tunelab.rag.ingest_html import html_blocks

# bump when cleaning or sectioning changes: KBs built with another version are rebuilt
INGEST_VERSION = 3  # 3: page furniture (navigation) dropped

SUPPORTED = (".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf")

DEFAULT_DROP = (
    r"related (articles|posts|pages)\b",
    r"share (this|on)\b",
    r"skip to (main )?content\b",
    r"table of contents\s*$",
    r"(copyright|©|\(c\))\s*(\d{4}|©)",
    r"all rights reserved",
    r"(page )?\d+( of \d+)?\s*$",
    r"(previous|next) (topic|page|chapter)\b",
    r"this page\s*$",
    r"show source\s*$",
)


@dataclass
class Block:
    """One paragraph of cleaned text, under `section_path` (outermost heading first)."""

    text: str
    section_path: tuple[str, ...] = ()
    start: int = 0  # offset in Document.text
    end: int = 0

    @property
    def section(self) -> str:
        return self.section_path[-1] if self.section_path else ""


@dataclass
class Document:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    furniture: int = 0  # navigation blocks / HTML navigation elements dropped

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)

    @property
    def title(self) -> str:
        for b in self.blocks:
            if b.section_path:
                return b.section_path[0]
        return self.path.name


def format_of(path: Path) -> str | None:
    """The reader for `path` ("txt", "md", "rst", "html", "pdf"), or None when unsupported."""
    name = path.name.lower()
    if name.endswith(".rst.txt") or name.endswith(".rst"):
        return "rst"
    for ext, fmt in ((".md", "md"), (".markdown", "md"), (".html", "html"), (".htm", "html"),
                     (".pdf", "pdf"), (".txt", "txt"), (".text", "txt")):
        if name.endswith(ext):
            return fmt
    return None


def read_document(path: str | Path, drop: tuple[str, ...] | list[str] | None = DEFAULT_DROP,
                  furniture: bool = True) -> Document:
    """Read, clean and section one file (see the module docstring for formats and cleaning);
    `furniture=False` keeps navigation blocks and HTML navigation elements."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise TunelabError(f"unsupported file type (supported: {', '.join(SUPPORTED)})", where=str(path))
    dropped_elements = 0
    if fmt == "pdf":
        raw_blocks = _pdf_blocks(path)
    else:
        try:
            raw = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise TunelabError(f"cannot read file ({e.strerror})", where=str(path)) from e
        if fmt == "html":
            raw_blocks, dropped_elements = html_blocks(raw, furniture)
        else:
            raw_blocks = {"txt": _txt_blocks, "md": _md_blocks, "rst": _rst_blocks}[fmt](raw)
    patterns = [re.compile(p, re.IGNORECASE) for p in (drop or ())]
    kept: list[tuple[str, tuple[str, ...], float]] = []
    for raw_block in raw_blocks:
        text, sec = raw_block[0], raw_block[1]
        text = _squash(text)
        if not text or any(p.match(text) for p in patterns):
            continue
        kept.append((text, tuple(sec), raw_block[2] if len(raw_block) > 2 else 0.0))
    nav = furniture_blocks(kept) if furniture else set()
    doc, pos = Document(path, furniture=len(nav) + dropped_elements), 0
    for i, (text, sec, _) in enumerate(kept):
        if i in nav:
            continue
        doc.blocks.append(Block(text, sec, pos, pos + len(text)))
        pos += len(text) + 2
    return doc


def _squash(text: str) -> str:
    """Trim trailing spaces per line and surrounding blank lines; keep inner line breaks (code)."""
    lines = [ln.rstrip() for ln in text.strip("\n").splitlines()]
    return "\n".join(lines).strip()


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


# ---------------------------------------------------------------- plain text
def _txt_blocks(raw: str) -> list[tuple[str, list[str]]]:
    return [(p, []) for p in _paragraphs(raw)]


# ---------------------------------------------------------------- markdown
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _md_inline(s: str) -> str:
    s = _MD_LINK.sub(r"\1", s)
    s = re.sub(r"(\*\*|__)(.+?)\1", r"\2", s)
    return re.sub(r"`([^`]+)`", r"\1", s)


# a line that is only links to this site (relative urls; links to other sites are content)
_MD_LINK_LINE = re.compile(r"\s*(?:[-*+]|\d+[.)])?\s*(?:\[[^\]]+\]\((?![a-zA-Z][\w+.-]*:|//)[^)]*\)[\s|·•,]*)+")


def _md_blocks(raw: str) -> list[tuple[str, list[str], float]]:
    out: list[tuple[str, list[str], float]] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    links = [0]  # lines of buf that are only links
    in_code = False

    def flush():
        if buf:
            out.append(("\n".join(buf), [t for _, t in path], links[0] / len(buf)))
            buf.clear()
        links[0] = 0

    def heading(level: int, title: str):
        flush()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, _md_inline(title.strip().strip("#").strip())))

    lines = raw.splitlines()
    underline = False  # the next line is the underline of a setext heading
    for i, line in enumerate(lines):
        if underline:
            underline = False
            continue
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            if not in_code:
                flush()
            continue
        if in_code:
            buf.append(line)
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if m:
            heading(len(m.group(1)), m.group(2))
        elif line.strip() and not buf and re.fullmatch(r"(=+|-+)\s*", nxt) and len(nxt.strip()) >= 2:
            heading(1 if nxt.strip()[0] == "=" else 2, line)
            underline = True
        elif re.fullmatch(r"\s*([-*_]\s*){3,}", line):  # horizontal rule
            flush()
        elif not line.strip():
            flush()
        else:
            links[0] += bool(_MD_LINK_LINE.fullmatch(line))
            buf.append(_md_inline(line))
    flush()
    return out


# ---------------------------------------------------------------- reStructuredText
_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+<>:._])\1{2,}\s*$")
_RST_ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)\s*(<[^>`]*>)?`")
_RST_DROP_DIRECTIVES = {"index", "toctree", "highlight", "module", "moduleauthor", "sectionauthor",
                        "currentmodule", "testsetup", "testcleanup", "only", "raw", "include",
                        "image", "figure", "tabularcolumns", "contents", "sectnum", "meta"}


_RST_LANG_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest"}  # argument = a language name


def _rst_inline(s: str) -> str:
    """Inline markup -> text, on a whole paragraph (markup may span lines)."""
    s = _RST_ROLE.sub(lambda m: m.group(1) or (m.group(2) or "")[1:-1], s)
    s = re.sub(r"``(.+?)``", r"\1", s, flags=re.S)
    s = re.sub(r"(\S)\s*::$", r"\1:", s)  # "usually::" (literal block follows) -> "usually:"
    s = re.sub(r"^\s*::$", "", s)
    s = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", s)
    s = re.sub(r"`([^`]+)`_*", r"\1", s)
    return re.sub(r"(\*\*|\*)(\S.*?)\1", r"\2", s)


def _rst_blocks(raw: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    styles: list[str] = []  # heading styles in order of first appearance = level
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    lines = raw.splitlines()
    skip_indent: int | None = None  # inside a dropped directive / comment body

    def flush():
        if buf:
            out.append((_rst_inline("\n".join(buf)), [t for _, t in path]))
            buf.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                i += 1
                continue
            skip_indent = None
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        over = _RST_ADORN.match(line)
        # overlined heading: ===== / Title / =====
        if over and i + 2 < len(lines) and lines[i + 1].strip() and _RST_ADORN.match(lines[i + 2]) \
                and lines[i + 2].strip()[0] == line.strip()[0]:
            style, title, i = "o" + line.strip()[0], lines[i + 1].strip(), i + 3
        elif line.strip() and indent == 0 and _RST_ADORN.match(nxt) and len(nxt.rstrip()) >= len(line.rstrip()) \
                and not buf:
            style, title, i = "u" + nxt.strip()[0], line.strip(), i + 2
        else:
            style = title = None
        if title is not None:
            flush()
            if style not in styles:
                styles.append(style)
            level = styles.index(style)
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, _rst_inline(title)))
            continue
        m = re.match(r"^(\s*)\.\.\s+(?:([\w:-]+)::|_[^:]*:|\[[^\]]*\]|\|[^|]*\|)?(.*)$", line)
        if m and line.strip().startswith(".."):
            flush()
            name = m.group(2)
            if name is None or name.split(":")[-1] in _RST_DROP_DIRECTIVES:
                skip_indent = indent  # comment, target or dropped directive: skip its body
            elif m.group(3).strip() and name not in _RST_LANG_DIRECTIVES:
                buf.append(m.group(3).strip())  # e.g. `.. note:: text` / `.. function:: f(x)`
            i += 1
            continue
        if re.match(r"^\s*:[\w -]+:(\s|$)", line) and not buf:  # field list / directive options
            i += 1
            continue
        if not line.strip():
            flush()
        elif _RST_ADORN.match(line) or re.fullmatch(r"\s*[+|][-=+|\s]*", line):
            pass  # transition or table border
        else:
            buf.append(line.replace("|", " ") if line.lstrip().startswith("|") else line)
        i += 1
    flush()
    return out


# ---------------------------------------------------------------- HTML: tunelab.rag.ingest_html

# ---------------------------------------------------------------- PDF
def _pdf_blocks(path: Path) -> list[tuple[str, list[str]]]:
    try:
        from pypdf import PdfReader
    except ImportError as e:
        raise TunelabError("reading PDF needs pypdf", where=str(path), hint="pip install 'tunelab[rag]'") from e
    try:
        reader = PdfReader(str(path))
        pages = [pg.extract_text() or "" for pg in reader.pages]
    except OSError as e:
        raise TunelabError(f"cannot read file ({e.strerror})", where=str(path)) from e
    except Exception as e:  # pypdf raises its own error types for broken files
        raise TunelabError(f"not a readable PDF ({type(e).__name__}: {e})", where=str(path),
                           hint="re-export the PDF or convert it to text") from e
    out = []
    for n, text in enumerate(pages, 1):
        for para in _paragraphs(text):
            out.append((re.sub(r"[ \t]*\n[ \t]*", " ", para), [f"page {n}"]))
    return out
