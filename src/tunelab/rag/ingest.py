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

Raises:
    TunelabError: unreadable file, unsupported extension, or a PDF pypdf cannot parse.
"""

from __future__ import annotations

import html.parser
import re
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError

# bump when cleaning or sectioning changes: KBs built with another version are rebuilt
INGEST_VERSION = 2

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


def read_document(path: str | Path, drop: tuple[str, ...] | list[str] | None = DEFAULT_DROP) -> Document:
    """Read, clean and section one file (see the module docstring for formats and cleaning)."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise TunelabError(f"unsupported file type (supported: {', '.join(SUPPORTED)})", where=str(path))
    if fmt == "pdf":
        raw_blocks = _pdf_blocks(path)
    else:
        try:
            raw = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise TunelabError(f"cannot read file ({e.strerror})", where=str(path)) from e
        raw_blocks = {"txt": _txt_blocks, "md": _md_blocks, "rst": _rst_blocks, "html": _html_blocks}[fmt](raw)
    patterns = [re.compile(p, re.IGNORECASE) for p in (drop or ())]
    doc, pos = Document(path), 0
    for text, sec in raw_blocks:
        text = _squash(text)
        if not text or any(p.match(text) for p in patterns):
            continue
        doc.blocks.append(Block(text, tuple(sec), pos, pos + len(text)))
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


def _md_blocks(raw: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    in_code = False

    def flush():
        if buf:
            out.append(("\n".join(buf), [t for _, t in path]))
            buf.clear()

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


# ---------------------------------------------------------------- HTML
class _HTMLBlocks(html.parser.HTMLParser):
    DROP = {"head", "title", "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg",
            "button"}
    BLOCK = {"p", "div", "li", "pre", "blockquote", "td", "th", "dt", "dd", "section", "article",
             "tr", "table", "ul", "ol", "dl", "br", "main", "body"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[tuple[str, list[str]]] = []
        self.path: list[tuple[int, str]] = []
        self.buf: list[str] = []
        self.drop_depth = 0
        self.heading: int | None = None
        self.pre = 0

    def flush(self):
        text = "".join(self.buf)
        if not self.pre:
            text = re.sub(r"[ \t\r\n]+", " ", text)
        if text.strip():
            self.out.append((text.strip(), [t for _, t in self.path]))
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag in self.DROP:
            self.drop_depth += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.flush()
            self.heading = int(tag[1])
        elif tag in self.BLOCK:
            self.flush()
            if tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag):
        if tag in self.DROP:
            self.drop_depth = max(0, self.drop_depth - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading is not None:
            title = re.sub(r"\s+", " ", "".join(self.buf)).strip().rstrip("¶").strip()
            self.buf = []
            while self.path and self.path[-1][0] >= self.heading:
                self.path.pop()
            if title:
                self.path.append((self.heading, title))
            self.heading = None
        elif tag in self.BLOCK:
            self.flush()
            if tag == "pre" and self.pre:
                self.pre -= 1

    def handle_data(self, data):
        if not self.drop_depth:
            self.buf.append(data)


def _html_blocks(raw: str) -> list[tuple[str, list[str]]]:
    p = _HTMLBlocks()
    p.feed(raw)
    p.close()
    p.flush()
    return p.out


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
