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
heuristic of `furniture_blocks` (its docstring has the exact rule): a block made of navigation
lines ("Next", "Previous", "Up", "Home" bars; breadcrumbs "Home > Guide > Keys"; table-of-contents
entries "Chapter 11. Data conversion", "2.3. Options"; lists of link-only items) with almost no
sentence punctuation. Ordinary prose and ordinary lists (steps, options) are kept: a line only
counts as navigation by its form (a nav word, a separator bar, a chapter/section number, or
being a whole link), never merely by being short.

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
            raw_blocks, dropped_elements = _html_blocks(raw, furniture)
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


# ---------------------------------------------------------------- page furniture
_NAV_WORD = r"(?:prev(?:ious)?|next|up|home|top|back|index|contents|search|table of contents|back to top)"
# a line of navigation words only: "Next", "« Previous | Up | Next »", "Previous topic", "Back to top"
_NAV_PUNCT = r"[\s|«»‹›←→<>\-–—·•:/\[\]]*"
_NAV_LINE = re.compile(rf"{_NAV_PUNCT}(?:{_NAV_WORD}(?:\s+(?:page|topic|chapter|section))?{_NAV_PUNCT})+", re.I)
# "Next: Installation", "Previous chapter: Overview", "Up: Guide"
_NAV_TITLED = re.compile(r"[\W_]*(?:prev(?:ious)?|next|up)(?:\s+(?:page|topic|chapter|section))?\s*[:»›→]\s*\S", re.I)
# a table-of-contents entry: "Chapter 11. Data conversion", "Appendix B: Tables" (any title), or a dotted
# number and a title of words only: "2.3. Options", "1.2 Getting started" (not "3.7 _ignore_", "3.6 Flag, auto")
_TOC_LINE = re.compile(r"(?:[-*+•]\s*)?(?:(?i:chapter|section|part|appendix|lesson)\s+(?:\d+|[IVXLC]+|[A-Z])\b[.:]?\s+\S"
                       r"|\d+(?:\.\d+)+\.?\s+[A-Z][A-Za-z'’-]*(?:\s+[A-Za-z'’&-]+)*\s*$)")
# an item of a bar: a title (capitalised words) or navigation words, not code ("int", "x > y", "METH_O")
_BAR_ITEM = re.compile(r"[«»‹›←→\s]*[A-Z][A-Za-z0-9 .'’&-]*[«»‹›←→\s]*")
_TOC_MARK = re.compile(r"\b(?:chapter|section|part|appendix)\s+(?:\d+|[IVXLC]+)\b\.?", re.I)
_NAV_TOKEN = re.compile(r"\b(?:prev(?:ious)?|next|up|home|top)\b", re.I)
_BAR = re.compile(r"\s+(?:\||»|›|·|•|→|>|/)\s+")
_IDENTIFIER = re.compile(r"\(\)|_|[A-Za-z]\.[A-Za-z]")  # os.chmod(), MAX_EMAX: API names, kept as content
_NUMBERING = re.compile(r"(?:\d+|[IVXLC]+|[A-Z])(?:\.\d+)*\.")  # "11." "2.3." "IV." "B."


def _sentence_ends(line: str) -> int:
    """Tokens ending a sentence (. ! ? ; :), not counting numbering such as "11." or "2.3."."""
    return sum(1 for tok in line.split() if tok[-1] in ".!?;:" and not _NUMBERING.fullmatch(tok)
               and not re.fullmatch(r"[\W_]+", tok))


def _words(line: str) -> int:
    return len(re.findall(r"\w+", line))


def _bar(line: str) -> bool:
    """A separator bar of 3+ short items: "Home > Guide > Keys", "Home | About | Contact"."""
    s = line.strip()
    if s.startswith("|") or s.endswith("|"):  # a Markdown table row
        return False
    items = _BAR.split(s)
    return len(items) >= 3 and all(0 < _words(i) <= 5 and not _sentence_ends(i)
                                   and (_BAR_ITEM.fullmatch(i) or _NAV_LINE.fullmatch(i)) for i in items)


def _nav_line(line: str, alone: bool = False) -> bool:
    """A navigation line; `alone` (a one-line block judged by itself) asks more of navigation words:
    decorated ("next »", "| Up |"), 2+ of them ("Previous topic" counts as Prev/Next + a noun), or
    a capitalised Prev/Previous/Next/Home, so "next" or "index" (a name) and a table header
    "Index" or "Contents" stay."""
    s = line.strip()
    if _NAV_LINE.fullmatch(s):
        return (not alone or bool(re.search(r"[|«»‹›←→]", s)) or len(_NAV_TOKEN.findall(s)) >= 2
                or bool(re.match(r"(?:Prev(?:ious)?|Next|Home)\b", s)) or _words(s) >= 2)
    return bool((_NAV_TITLED.match(s) and _words(s) <= 10) or _bar(s))


def _toc_line(line: str) -> bool:
    s = line.strip()
    return bool(_TOC_LINE.match(s)) and _words(s) <= 12 and not _sentence_ends(s)


def _flat_nav(line: str) -> bool:
    """One line holding a flattened footer: "Prev Next Chapter 11. Data conversion Home Chapter 13. Programming"."""
    toc, nav = len(_TOC_MARK.findall(line)), len(_NAV_TOKEN.findall(line))
    return (toc >= 2 or (toc >= 1 and nav >= 2)) and _words(line) <= 6 * (toc + nav) and not _sentence_ends(line)


def furniture_blocks(blocks: list[tuple[str, tuple[str, ...], float]]) -> set[int]:
    """Indices of the navigation blocks among `blocks` (text, section path, link share).

    A *navigation line* is one of: navigation words only ("Next", "« Previous | Up | Next »",
    "Previous topic", "Back to top"); "Next: <title>" (at most 10 words); a separator bar of 3+
    items split by | » › · • → > or /, each a capitalised title of at most 5 words or navigation
    words (not a Markdown table row, not code such as "int | str | None" or "x > y > z");
    a table-of-contents entry ("Chapter 11. Data conversion", "Appendix B: Tables" with any title;
    "2.3. Options", "1.2 Getting started": a dotted number and a capitalised title of words only,
    so "3.7 _ignore_" is not one; at most 12 words, no sentence punctuation). The *link share* is the part of the block that
    was text of links to this site (HTML `<a href>` relative or #anchor, Markdown lines that are a
    whole `[text](url)` with a relative url; never in code blocks): links to other sites are
    content (a list of tools). A *link item* is a block of at most 10 words with link share
    >= 0.9 that reads as a title, not an API name: 2+ words, or one capitalised word ("Streams",
    "API"), and no "()", "_" or "a.b" (lists of `os.chmod()`, `tuple`, `PyConfig` links are content).

    A block is navigation when:

    1. it has 2+ lines, at least 60% of them navigation lines or whole links, and at most one
       sentence-ending punctuation mark (. ! ? ; : not counting numbering such as "11.") per
       4 lines; or
    2. it is one line of navigation words (decorated "next »", 2+ words "Back to top", or a
       capitalised Prev/Previous/Next/Home: a lone "next", "index" or a table header "Contents"
       stays), a "Next: <title>" line or a bar; or
    3. it is one line with 2+ chapter/section numbers (or one and 2+ of Prev/Next/Up/Home/Top),
       at most 6 words per such marker and no sentence punctuation (a flattened footer); or
    4. it belongs to a run of consecutive one-line blocks of the same section that are each a
       navigation line, a table-of-contents entry or a link item (an HTML list or table of
       links split into one block per `<li>`/`<td>`): runs of 2+ such blocks, or 3+ when they
       are all plain link items, are dropped.

    A lone table-of-contents entry or a lone link, and lists whose lines are ordinary words
    ("1. Open the settings", "- Restart the app"), are kept.
    """
    nav: set[int] = set()

    def kind(text: str, link: float) -> str | None:
        if _nav_line(text):
            return "nav"
        if _toc_line(text):
            return "toc"
        if link >= 0.9 and _words(text) <= 10 and not _IDENTIFIER.search(text) \
                and (_words(text) >= 2 or re.fullmatch(r"[A-Z][a-z]+|[A-Z]{2,5}", text)):
            return "link"
        return None

    run: list[int] = []
    kinds: list[str] = []

    def close_run():
        if len(run) >= 3 or (len(run) == 2 and any(k != "link" for k in kinds)):
            nav.update(run)
        run.clear()
        kinds.clear()

    prev_sec = None
    for i, (text, sec, link) in enumerate(blocks):
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if sec != prev_sec:
            close_run()
        prev_sec = sec
        if len(lines) >= 2:
            close_run()
            navs = sum(1 for ln in lines if _nav_line(ln) or _toc_line(ln))
            navs = max(navs, round(link * len(lines)))
            ends = sum(_sentence_ends(ln) for ln in lines)
            if navs >= 0.6 * len(lines) and ends <= len(lines) / 4:
                nav.add(i)
            continue
        line = lines[0] if lines else ""
        if _nav_line(line, alone=True) or _flat_nav(line):
            nav.add(i)
        k = kind(line, link)
        if k is None:
            close_run()
        else:
            run.append(i)
            kinds.append(k)
    close_run()
    return nav


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


# ---------------------------------------------------------------- HTML
class _HTMLBlocks(html.parser.HTMLParser):
    DROP = {"head", "title", "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg",
            "button"}
    NAV = {"nav", "header", "footer", "aside"}  # counted as furniture when they held text
    BLOCK = {"p", "div", "li", "pre", "blockquote", "td", "th", "dt", "dd", "section", "article",
             "tr", "table", "ul", "ol", "dl", "br", "main", "body"}
    NAV_CLASSES = {"navheader", "navfooter", "navbar", "breadcrumb", "breadcrumbs", "pagination", "nav-links",
                   "toctree-wrapper"}  # toctree-wrapper: Sphinx's lists of the pages below this one
    VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}

    def __init__(self, furniture: bool = True):
        super().__init__(convert_charrefs=True)
        self.furniture = furniture
        self.out: list[tuple[str, list[str], float]] = []
        self.path: list[tuple[int, str]] = []
        self.buf: list[str] = []
        self.link_chars = 0  # non-blank characters of self.buf inside <a>
        self.drop_depth = 0
        self.drop_text = 0  # non-blank characters seen inside the navigation element being dropped
        self.nav: list = []  # [tag, depth] of an element dropped as navigation (role / class)
        self.dropped = 0  # navigation elements dropped that held text
        self.heading: int | None = None
        self.pre = 0
        self.link = 0
        self.link_internal: list[bool] = []  # per open <a>: links inside this site (navigation candidates)

    def flush(self):
        text = "".join(self.buf)
        if not self.pre:
            text = re.sub(r"[ \t\r\n]+", " ", text)
        if text.strip():
            total = len(re.sub(r"\s", "", text))
            share = 0.0 if self.pre else min(1.0, self.link_chars / total)  # code is never navigation
            self.out.append((text.strip(), [t for _, t in self.path], share))
        self.buf = []
        self.link_chars = 0

    def _is_nav(self, tag, attrs) -> bool:
        if not self.furniture or tag in self.VOID:
            return False
        a = {k: (v or "") for k, v in attrs}
        classes = set(a.get("class", "").lower().split())
        return (a.get("role", "").lower() == "navigation" or bool(classes & self.NAV_CLASSES)
                or (tag == "table" and a.get("summary", "").lower().startswith("navigation")))

    def _end_drop(self):
        if self.drop_text:
            self.dropped += 1
        self.drop_text = 0

    def handle_starttag(self, tag, attrs):
        if self.nav:
            if tag == self.nav[0]:
                self.nav[1] += 1
            return
        if tag in self.DROP:
            self.drop_depth += 1
        elif not self.drop_depth and self._is_nav(tag, attrs):
            self.flush()
            self.nav = [tag, 1]
        elif tag == "a":
            self.link += 1
            self.link_internal.append(_internal(dict(attrs).get("href")))
        elif re.fullmatch(r"h[1-6]", tag):
            self.flush()
            self.heading = int(tag[1])
        elif tag in self.BLOCK:
            self.flush()
            if tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag):
        if self.nav:
            if tag == self.nav[0]:
                self.nav[1] -= 1
                if not self.nav[1]:
                    self.nav = []
                    self._end_drop()
            return
        if tag in self.DROP:
            self.drop_depth = max(0, self.drop_depth - 1)
            if not self.drop_depth and tag in self.NAV:
                self._end_drop()
            elif not self.drop_depth:
                self.drop_text = 0
        elif tag == "a":
            self.link = max(0, self.link - 1)
            if self.link_internal:
                self.link_internal.pop()
        elif re.fullmatch(r"h[1-6]", tag) and self.heading is not None:
            title = re.sub(r"\s+", " ", "".join(self.buf)).strip().rstrip("¶").strip()
            self.buf = []
            self.link_chars = 0
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
        if self.nav or self.drop_depth:
            self.drop_text += len(data.strip())
            return
        self.buf.append(data)
        if self.link and self.link_internal and self.link_internal[-1]:
            self.link_chars += len(re.sub(r"\s", "", data))


def _internal(href: str | None) -> bool:
    """A link to this site (relative or #anchor): what navigation is made of. Links to other sites
    (a list of tools, references) are content, never counted as navigation."""
    return bool(href) and not re.match(r"[a-zA-Z][\w+.-]*:|//", href)


def _html_blocks(raw: str, furniture: bool = True) -> tuple[list[tuple[str, list[str], float]], int]:
    """(blocks as (text, heading path, link share), navigation elements dropped that held text)."""
    p = _HTMLBlocks(furniture)
    p.feed(raw)
    p.close()
    p.flush()
    return p.out, p.dropped


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
