"""The column-mapping step: a CSV or JSONL whose fields are no format tunelab knows (a `question` and an
`answer` column, say) is refused on upload; here its first records are shown and each role of a format is
mapped to one of its fields, which become the file's `data_columns` and the job's `data.columns`.

    GET  /studio/f/files/ID/columns      the first PREVIEW records (each value as text, escaped) and the mapping
                                         form, a format and its roles preselected by `suggest` (pages.py:
                                         /datasets/ID/columns); a file the data layer cannot read at all
                                         (invalid JSON, empty) is a 400 with its line
    POST /studio/api/files/ID/columns    JSON {"columns": {role: field}} -> {"id", "object": "file.columns",
                                         "status", "kind", "columns"}: the file checked again with the mapping
                                         (files_api.ServingFiles.map_columns); a 400 names the role (param
                                         `columns.<role>`) or carries the data layer's line, and changes nothing

Roles (FORMATS): prompt + completion (chat examples), instruction (+ input, system) + output (alpaca),
messages (a list of chat messages), prompt + chosen + rejected (preference pairs, for DPO). `suggest`
guesses a format and its fields from the field names (question -> prompt, answer -> completion, ...).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.files_api import ServingFiles
from tunelab.serve.protocol.common import read_json
from tunelab.serve.protocol.studio import FileColumns
from tunelab.serve.studio.html import esc, table

router = APIRouter()
PREVIEW = 5
MAX_CELL = 240
# format: (label, required roles, optional roles)
FORMATS = {
    "prompt_completion": ("prompt → completion (chat examples)", ("prompt", "completion"), ()),
    "alpaca": ("instruction (+ input) → output (chat examples)", ("instruction", "output"), ("input", "system")),
    "messages": ("a list of chat messages (role, content)", ("messages",), ()),
    "preference": ("prompt, chosen, rejected (preference pairs, for DPO)", ("prompt", "chosen", "rejected"), ()),
}
ROLES = tuple(dict.fromkeys(r for _, req, opt in FORMATS.values() for r in (*req, *opt)))
_GUESS = {
    "prompt": ("prompt", "question", "query", "q", "input", "user", "instruction", "text", "source"),
    "completion": ("completion", "answer", "response", "a", "output", "reply", "assistant", "target", "label"),
    "instruction": ("instruction", "task", "question", "prompt"),
    "input": ("input", "context"),
    "output": ("output", "answer", "response", "completion"),
    "system": ("system", "system_prompt"),
    "messages": ("messages", "conversation", "dialog", "dialogue", "chat", "turns"),
    "chosen": ("chosen", "preferred", "good", "better", "accepted"),
    "rejected": ("rejected", "dispreferred", "bad", "worse", "non_preferred"),
}


def suggest(fields: list[str]) -> tuple[str, dict[str, str]]:
    """(format, {role: field}) guessed from the field names (case-insensitive; a field is used once)."""
    low = {f.lower().strip(): f for f in fields}

    def pick(role: str, used: set) -> str | None:
        for name in _GUESS[role]:
            f = low.get(name)
            if f is not None and f not in used:
                return f
        return None

    def fill(fmt: str) -> dict[str, str]:
        out, used = {}, set()
        for role in (*FORMATS[fmt][1], *FORMATS[fmt][2]):
            f = pick(role, used)
            if f is not None:
                out[role] = f
                used.add(f)
        return out

    for fmt in ("preference", "messages", "alpaca"):
        got = fill(fmt)
        if all(r in got for r in FORMATS[fmt][1]) and (fmt != "alpaca" or low.get("instruction")):
            return fmt, got
    got = fill("prompt_completion")
    rest = [f for f in fields if f not in got.values()]
    for role in FORMATS["prompt_completion"][1]:  # unguessed: the remaining fields in their order
        if role not in got and rest:
            got[role] = rest.pop(0)
    return "prompt_completion", got


def _text(value) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return s if len(s) <= MAX_CELL else s[:MAX_CELL - 1] + "…"


def preview(state, tenant: str, file_id: str) -> dict:
    row, records = ServingFiles(state, tenant).records(file_id)
    fields = list(dict.fromkeys(str(k) for r in records[:PREVIEW] for k in r.data))
    fmt, guess = suggest(fields)
    current = row.get("data_columns") or {}
    return {"id": row["id"], "filename": row["filename"], "status": row["status"],
            "status_details": row["status_details"], "count": len(records), "fields": fields,
            "records": [{k: _text(v) for k, v in r.data.items()} for r in records[:PREVIEW]],
            "formats": {k: {"label": lab, "roles": list(req), "optional": list(opt)}
                        for k, (lab, req, opt) in FORMATS.items()},
            "suggested": {"format": fmt, "columns": current or guess}}


def check_columns(body, fields: list[str]) -> dict[str, str]:
    """The body's {role: field}, every role one of ROLES, every field one of the file's, no field twice."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_body")
    unknown = sorted(set(body) - {"columns"})
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                       code="unknown_parameter")
    cols = body.get("columns")
    if not isinstance(cols, dict) or not cols:
        raise APIError(400, "Missing required parameter: 'columns' (an object {role: the file's field})",
                       param="columns", code="missing_required_parameter")
    seen: dict[str, str] = {}
    for role, field in cols.items():
        if role not in ROLES:
            raise APIError(400, f"unknown role '{role}': use {', '.join(ROLES)}", param=f"columns.{role}",
                           code="invalid_value")
        if not isinstance(field, str) or field not in fields:
            raise APIError(400, f"the file has no field {json.dumps(field)}: it has {', '.join(fields)}",
                           param=f"columns.{role}", code="invalid_value")
        if field in seen:
            raise APIError(400, f"field '{field}' is mapped twice (to {seen[field]} and {role})",
                           param=f"columns.{role}", code="invalid_value")
        seen[field] = role
    return {role: field for role, field in cols.items() if role != field}  # a field already named so: no rename


@router.post("/studio/api/files/{file_id}/columns")
async def map_columns(request: Request, file_id: str, tenant: str = Depends(current_tenant)) -> FileColumns:
    body = await read_json(request)
    state = request.app.state.tl
    prev = await run_in_threadpool(preview, state, tenant, file_id)
    cols = check_columns(body, prev["fields"])
    if not cols:
        raise APIError(400, "every role is mapped to the field of its own name: the file needs no mapping",
                       param="columns", code="invalid_value")
    row = await run_in_threadpool(ServingFiles(state, tenant).map_columns, file_id, cols)
    return FileColumns(id=row["id"], status=row["status"], kind=row["kind"], columns=row["data_columns"])


def columns_html(p: dict) -> str:
    fields = p["fields"]
    head = f'<p><b>{esc(p["filename"])}</b>: {p["count"]} records, fields {", ".join(f"<code>{esc(f)}</code>" for f in fields)}.</p>'
    if p["status"] != "processed":
        head += (f'<p class="err">Not read as it is: {esc(p["status_details"])}</p>'
                 '<p>Tell tunelab which field plays which part. The mapping is checked on every record, then '
                 'kept with the file; a job from it trains with it as <code>data.columns</code>.</p>')
    else:
        head += '<p class="ok">Mapped: a job from this file uses the mapping below. You can change it.</p>'
    rows = [[esc(r.get(f, "")) for f in fields] for r in p["records"]]
    preview_t = table(fields, rows, caption=f"the first {len(rows)} of {p['count']} records", cls="preview")
    sug = p["suggested"]
    fmts = "".join(f'<option value="{esc(k)}"{" selected" if k == sug["format"] else ""}>{esc(v["label"])}</option>'
                   for k, v in p["formats"].items())
    selects = []
    for role in ROLES:
        opts = '<option value="">(none)</option>' + "".join(
            f'<option value="{esc(f)}"{" selected" if sug["columns"].get(role) == f else ""}>{esc(f)}</option>'
            for f in fields)
        selects.append(f'<span class="role" data-role="{esc(role)}"><label for="col-{esc(role)}">{esc(role)}</label>'
                       f'<select id="col-{esc(role)}" name="{esc(role)}">{opts}</select></span>')
    formats_json = esc(json.dumps(p["formats"]))
    return (head + preview_t + f'<form id="columns" class="panel" data-file="{esc(p["id"])}" data-formats="{formats_json}">'
            f'<h2>Map the columns</h2><label for="col-format">The file holds</label>'
            f'<select id="col-format" name="format">{fmts}</select><div class="row roles">{"".join(selects)}</div>'
            '<button type="submit" id="col-save">Use this mapping</button> '
            '<span class="err" role="alert" id="col-err"></span></form>')


@router.get("/studio/f/files/{file_id}/columns", response_class=HTMLResponse)
async def columns_fragment(request: Request, file_id: str, tenant: str = Depends(current_tenant)):
    return columns_html(await run_in_threadpool(preview, request.app.state.tl, tenant, file_id))
