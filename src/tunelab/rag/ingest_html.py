"""HTML -> blocks for `tunelab.rag.ingest`: headings make the section path; <script>, <style>,
<nav>, <header>, <footer>, <aside>, <form> ... are dropped, and with `furniture` also elements
with role="navigation", a navigation class (DocBook navheader/navfooter, navbar, breadcrumbs,
pagination, Sphinx toctree-wrapper) or a `<table summary="Navigation ...">`. Each block carries
its *link share*: the part of its text inside links to this site (what `furniture_blocks` reads).
"""

from __future__ import annotations

import html.parser
import re

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


def html_blocks(raw: str, furniture: bool = True) -> tuple[list[tuple[str, list[str], float]], int]:
    """(blocks as (text, heading path, link share), navigation elements dropped that held text)."""
    p = _HTMLBlocks(furniture)
    p.feed(raw)
    p.close()
    p.flush()
    return p.out, p.dropped
