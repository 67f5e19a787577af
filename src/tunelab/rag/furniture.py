"""Page furniture: navigation blocks (Next/Previous bars, breadcrumbs, chapter lists, link lists).

`furniture_blocks(blocks)` returns the indices of the blocks to drop; its docstring has the rule.
`tunelab.rag.ingest.read_document` applies it to every format after cleaning (HTML navigation
elements are dropped earlier, by `tunelab.rag.ingest_html`).
"""

from __future__ import annotations

import re

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
