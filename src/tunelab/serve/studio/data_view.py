"""Datasets: the tenant's `/v1/files` as a table, and one file inspected as `tunelab data inspect` does.

    GET /studio/f/files                       every file: name, size, status (the data layer's message if refused)
    GET /studio/f/files/ID/inspect?model=M    counts and token lengths per split, a length histogram,
                                              one example with its learned tokens highlighted
    GET /studio/api/files/ID/inspect?model=M  the same numbers as JSON

Inspecting tokenizes every example with model M's tokenizer (default: the served base) exactly as
training does (tunelab.data.inspect.inspect_config: same template, masking, max_length 1024 default);
a chat file is an sft dataset, a preference file a dpo one. M is the served base or an alias of
`tunelab models`, never a path (serve/model_names.py, which keeps the last few tokenizers).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.serve import jobs_db
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.files_api import materialize
from tunelab.serve.model_names import check_model, tokenizer
from tunelab.serve.protocol.studio import InspectReport
from tunelab.serve.studio.html import esc, fmt_bytes, table

router = APIRouter()
MAX_SHOWN_TOKENS = 600
KINDS = {"sft": "chat examples", "preference": "preference pairs", "openai_dpo": "preference pairs (OpenAI's DPO lines)"}





def token_pieces(tok, ids: list[int], learned: list[bool]) -> list[list]:
    """[text, learned] per token; a token that is part of a UTF-8 character (byte-level BPE splits an
    em dash into three) is joined with the next ones of the same kind until the text decodes whole."""
    out, group = [], []
    for i, t in enumerate(ids):
        group.append(t)
        text = tok.decode(group)
        last = i + 1 == len(ids) or learned[i + 1] != learned[i]
        if text.endswith("\ufffd") and not last and len(group) < 4:
            continue
        out.append([text, learned[i], len(group)])
        group = []
    return out


def inspect_file(state, tenant: str, file_id: str, model: str) -> dict:
    """The inspect report of one uploaded file (blocking)."""
    from tunelab.config import from_dict
    from tunelab.data.inspect import inspect_config, length_bins
    from tunelab.data.tokenize import IGNORE

    row = jobs_db.get_file(jobs_db.conn(state.db_path), tenant, file_id)
    if row["status"] != "processed":
        raise APIError(400, f"{row['filename']} was not accepted: {row['status_details']}", param="file",
                       code="invalid_file")
    ident = check_model(state, model)  # the base or an alias, never a path (serve/model_names.py)
    path = None
    try:
        tok = tokenizer(state, model)
        with tempfile.TemporaryDirectory(prefix="studio-inspect-") as tmp:
            path = materialize(state, row, Path(tmp) / "data")
            task = "sft" if row["kind"] == "sft" else "dpo"
            data = {"train": str(path), "columns": row.get("data_columns") or {}}  # the Studio's mapping, if any
            cfg = from_dict({"task": task, "model": {"name": ident}, "data": data})
            rep = inspect_config(cfg, tok)
    except TunelabError as e:  # named by the upload's name and the model's, never by a server path
        msg = e.one_line().replace(str(path), row["filename"]) if path is not None else e.one_line()
        raise APIError(400, msg.replace(ident, model), param="model", code="inspect_failed") from None
    splits = [{"name": s.name, "count": s.count, "mean": round(s.mean, 1), "max": max(s.lengths, default=0),
               "truncated": s.truncated, "learned_tokens": s.learned_tokens, "bins": length_bins(s.lengths)}
              for s in rep.splits]
    example = None
    if rep.examples:
        ex = rep.examples[0]
        pieces = token_pieces(tok, ex.input_ids[:MAX_SHOWN_TOKENS], [x != IGNORE for x in ex.labels])
        example = {"where": ex.where.replace(str(path), row["filename"]), "tokens": pieces,
                   "shown": sum(n for _, _, n in pieces), "total": len(ex.input_ids)}
    return {"file": file_id, "filename": row["filename"], "kind": row["kind"], "task": rep.task, "model": model,
            "template": rep.template.name, "max_length": cfg.data.max_length, "splits": splits,
            "example": example, "warnings": rep.warnings}


@router.get("/studio/api/files/{file_id}/inspect")
async def inspect_json(request: Request, file_id: str, model: str | None = None,
                       tenant: str = Depends(current_tenant)) -> InspectReport:
    state = request.app.state.tl
    return await run_in_threadpool(inspect_file, state, tenant, file_id, model or state.base)


def _histogram(b: list[tuple[int, int, int]]) -> str:
    top = max((c for _, _, c in b), default=1) or 1
    rows = "".join(f'<li><span class="bin">{lo}–{hi}</span><span class="bar" style="width:{round(60 * c / top)}%">'
                   f'</span><span class="n">{c}</span></li>' for lo, hi, c in b)
    return f'<ol class="hist" aria-label="examples per token length">{rows}</ol>'


def inspect_html(rep: dict) -> str:
    head = ["split", "examples", "mean tokens", "max", "truncated", "learned tokens"]
    rows = [[esc(s["name"]), str(s["count"]), f'{s["mean"]:.0f}', str(s["max"]), str(s["truncated"]),
             f'{s["learned_tokens"]:,}'] for s in rep["splits"]]
    out = [(f'<p><b>{esc(rep["filename"])}</b>: {KINDS.get(rep["kind"], esc(rep["kind"]))}, trained as <b>{esc(rep["task"])}</b> · template '
           f'<code>{esc(rep["template"])}</code> · tokenizer of <code>{esc(rep["model"])}</code> · max_length '
           f'{rep["max_length"]}</p>'), table(head, rows, caption="examples and token lengths")]
    out += [f'<h2>Token lengths ({esc(s["name"])})</h2>{_histogram(s["bins"])}' for s in rep["splits"]]
    out += [f'<p class="warn">warning: {esc(w)}</p>' for w in rep["warnings"]]
    ex = rep["example"]
    if ex:
        toks = "".join(f'<span class="{"learn" if learned else "mask"}">{esc(t)}</span>' for t, learned, _ in ex["tokens"])
        more = f' (first {ex["shown"]} of {ex["total"]} tokens)' if ex["shown"] < ex["total"] else ""
        out.append(f'<h2>Example 1 <small>({esc(ex["where"])}){more}</small></h2><p class="legend">'
                   '<span class="learn">learned</span> <span class="mask">masked</span></p>'
                   f'<pre class="tokens" id="example">{toks}</pre>')
    out.append(f'<p><a href="/new?file={esc(rep["file"])}">Fine-tune on this file</a></p>')
    return "".join(out)


@router.get("/studio/f/files/{file_id}/inspect", response_class=HTMLResponse)
async def inspect_fragment(request: Request, file_id: str, model: str | None = None,
                           tenant: str = Depends(current_tenant)):
    return inspect_html(await inspect_json(request, file_id, model, tenant))


@router.get("/studio/f/files", response_class=HTMLResponse)
def files_fragment(request: Request, tenant: str = Depends(current_tenant)):
    c = jobs_db.conn(request.app.state.tl.db_path)
    rows, _ = jobs_db.page(c, "files", "tenant = ?", (tenant,), None, 10000, kind="file")
    if not rows:
        return '<p class="muted">No files yet: upload one above.</p>'
    cells = []
    for r in rows:
        ok = r["status"] == "processed"
        name = f'<a href="/datasets/{esc(r["id"])}">{esc(r["filename"])}</a>' if ok else esc(r["filename"])
        mapped = (f' <a href="/datasets/{esc(r["id"])}/columns">columns mapped</a>' if r.get("data_columns")
                  else "")
        status = (f'<span class="badge finished">{esc(r["kind"])}</span>{mapped}' if ok else
                  f'<span class="badge failed">refused</span> <span class="err">{esc(r["status_details"])}</span> '
                  f'<a href="/datasets/{esc(r["id"])}/columns">map its columns</a>')
        cells.append([name, status, fmt_bytes(r["bytes"]), esc(time.strftime("%Y-%m-%d %H:%M",
                                                                               time.localtime(r["created_at"]))),
                      f'<code>{esc(r["id"])}</code>'])
    return table(["file", "status", "size", "uploaded", "id"], cells, cls="list")
