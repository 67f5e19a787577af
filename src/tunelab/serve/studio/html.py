"""HTML building blocks of the Studio: the page shell, escaping, tables, a small Markdown subset.

Every value that comes from a run, a file or a request goes through `esc` (html.escape, quotes too).
The shell holds no tenant data: it names the fragments (`data-fragment="/studio/f/..."`) that
studio.js fetches with the key of the browser session and puts in place, so a refresh, a reconnect or a
server restart shows what the server holds then.
"""

from __future__ import annotations

import html
import json
import re

from tunelab.serve.studio.chart import CHART

NAV = [("/", "Home"), ("/runs", "Runs"), ("/datasets", "Datasets"), ("/new", "New fine-tune"), ("/jobs", "Jobs"),
       ("/chat", "Chat"), ("/kb", "Knowledge bases")]


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, auth: bool, active: str, args: dict | None = None) -> str:
    """The whole document: nav, the key box (shown by studio.js when a key is needed), `body`."""
    links = "".join(f'<a href="{href}"{" aria-current=page" if href == active else ""}>{esc(label)}</a>'
                    for href, label in NAV)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · tunelab studio</title>
<link rel="stylesheet" href="/studio/static/uPlot.min.css"><link rel="stylesheet" href="/studio/static/studio.css">
</head><body data-auth="{1 if auth else 0}" data-args="{esc(json.dumps(args or {}))}" data-chart="{esc(json.dumps(CHART))}">
<a class="skip" href="#main">Skip to content</a>
<header><span class="brand">tunelab <b>studio</b></span><nav aria-label="Main">{links}</nav>
<form id="keybox" hidden><label for="apikey">API key</label>
<input id="apikey" type="password" autocomplete="off" placeholder="tl-..." required>
<button type="submit">Use key</button><span class="err" role="alert" id="keyerr"></span></form>
<button id="forget" type="button" hidden>Forget key</button></header>
<main id="main" tabindex="-1"><h1>{esc(title)}</h1>
{body}
</main>
<script src="/studio/static/uPlot.iife.min.js"></script><script src="/studio/static/studio.js"></script>
<script src="/studio/static/pages.js"></script>
</body></html>"""


def upload_form(title: str = "Upload") -> str:
    """The training-file upload (pages.js posts it to /v1/files; a file whose fields are no known format goes
    to its column-mapping step, /datasets/ID/columns)."""
    return f"""<form id="upload" class="panel"><h2>{esc(title)}</h2>
<label for="upfile">Training file (.jsonl, .json, .csv, .tsv, .parquet)</label>
<input id="upfile" name="file" type="file" accept=".jsonl,.json,.csv,.tsv,.parquet" required>
<button type="submit">Upload</button> <span class="err" role="alert" id="uperr"></span></form>"""


def fragment(url: str, label: str = "Loading…") -> str:
    """A placeholder that studio.js fills with the server's HTML at `url` (sent with the key)."""
    return f'<div data-fragment="{esc(url)}" aria-live="polite"><p class="muted">{esc(label)}</p></div>'


def table(head: list[str], rows: list[list[str]], caption: str | None = None, cls: str = "") -> str:
    """`rows` are already HTML (escape the cells yourself); `head` is text."""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    th = "".join(f'<th scope="col">{esc(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}">{cap}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def fmt_loss(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


# ---- Markdown: the subset tunelab's own reports use ----------------------------------------------------------
_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
           (re.compile(r"&lt;br&gt;"), "<br>")]
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # CommonMark: a backslash before one of these is that character
_HOLE = re.compile("\x00(\\d+)\x00")


_BULLET = re.compile(r"^[-*]\s+")


def _inline(text: str) -> str:
    """Escaped HTML with `code`, **bold** and <br>; a backslash-escaped character (`\\|`, `\\*`, `\\<`, `\\\\`) is
    that character as text, never markup (runs/report.cell writes a cell's text so)."""
    held: list[str] = []

    def hold(ch: str) -> str:
        held.append(ch)
        return f"\x00{len(held) - 1}\x00"

    out, i, text = [], 0, text.replace("\x00", "\ufffd")
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _PUNCT:
            out.append(hold(text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    out = esc("".join(out))
    for pat, rep in _INLINE:
        out = pat.sub(rep, out)
    return _HOLE.sub(lambda m: esc(held[int(m.group(1))]), out)


def split_row(line: str) -> list[str]:
    """The cells of a pipe-table row: split at each `|` that no backslash escapes (the escape is kept for
    `_inline`), the outer pipes dropped."""
    cells, cur, i, closed = [], [], 0, False
    line = line.strip()
    while i < len(line):
        ch, closed = line[i], False
        if ch == "\\" and i + 1 < len(line):
            cur.append(line[i:i + 2])
            i += 2
            continue
        if ch == "|":
            cells.append("".join(cur))
            cur, closed = [], True
        else:
            cur.append(ch)
        i += 1
    if not closed:
        cells.append("".join(cur))
    if line.startswith("|"):
        cells = cells[1:]
    return [c.strip() for c in cells]


def markdown(text: str) -> str:
    """Headings, bullet lists, pipe tables, paragraphs, inline code/bold and <br> (the rest is escaped
    text). Images are dropped: the Studio draws its own curves."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line or line.startswith("!["):
            i += 1
        elif m := re.match(r"^(#{1,4})\s+(.*)", line):
            level = min(len(m.group(1)) + 1, 5)  # the page has its own h1
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(split_row(lines[i]))
                i += 1
            rows = [r for r in block[1:] if not all(re.fullmatch(r":?-+:?", c or "-") for c in r)]
            head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in block[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif re.match(r"^[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^[-*]\s+", lines[i]):
                items.append("<li>" + _inline(_BULLET.sub("", lines[i])) + "</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||[-*]\s|!\[)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)
