"""The Studio's pages: `GET /`, /runs, /runs/NAME, /compare, /datasets, /datasets/ID, /new, /jobs,
/jobs/ID, /chat, /kb, /kb/NAME, and the static files under /studio/static/.

A page is a shell (html.page): navigation, labelled forms and the fragments studio.js loads with
the session's key. It carries no tenant data, so it needs no key; each fragment and API call
does (auth.current_tenant), as every /v1 route does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from tunelab.serve.errors import not_found
from tunelab.serve.names import check_name
from tunelab.serve.studio.html import esc, fmt_bytes, fragment, page, upload_form

router = APIRouter()
STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _page(request: Request, title: str, body: str, active: str, **args) -> HTMLResponse:
    return HTMLResponse(page(title, body, auth=request.app.state.tl.auth, active=active, args=args))


@router.get("/studio/static/{name}")
def static(name: str):
    path = STATIC / name
    if "/" in name or path.suffix not in _TYPES or not path.is_file():
        raise not_found("file", name)
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", status_code=204, response_class=Response)  # no icon: 204, no body
def favicon():
    return Response(status_code=204)


@router.get("/", response_class=HTMLResponse)
def home(request: Request):
    body = f"""<p class="lead">Fine-tune, watch, compare and serve, in one place. Everything here is read from the
server, so a refresh shows the same thing.</p>
<div class="cards"><a class="card" href="/datasets"><b>1. Upload a dataset</b><span>chat examples or preference
pairs, checked as <code>tunelab train</code> reads them; any CSV or JSONL, its columns mapped if need be</span></a>
<a class="card" href="/new"><b>2. Start a fine-tune</b><span>with the memory estimate before it starts</span></a>
<a class="card" href="/chat"><b>3. Compare</b><span>base, tuned and tuned + knowledge base, side by side</span></a></div>
<section aria-labelledby="h-jobs"><h2 id="h-jobs">Recent jobs</h2>{fragment("/studio/f/jobs?limit=5")}</section>
<section aria-labelledby="h-runs"><h2 id="h-runs">Recent runs</h2>{fragment("/studio/f/runs?limit=5")}</section>"""
    return _page(request, "Home", body, "/")


@router.get("/runs", response_class=HTMLResponse)
def runs(request: Request):
    return _page(request, "Runs", fragment("/studio/f/runs"), "/runs")


@router.get("/runs/{name}", response_class=HTMLResponse)
def run(request: Request, name: str):
    check_name(name, "run")
    return _page(request, f"Run {name}", fragment(f"/studio/f/runs/{name}"), "/runs", run=name)


@router.get("/compare", response_class=HTMLResponse)
def compare(request: Request, runs: Annotated[list[str], Query()] = ()):
    names = [check_name(r, "runs") for r in runs]
    body = ('<p>Training (solid) and validation (dashed) loss by step.</p>'
            f'<div class="chart" role="img" aria-label="loss curves of {esc(", ".join(names))}" '
            f'data-chart-runs="{esc(",".join(names))}"></div><p class="err" role="alert"></p>'
            '<p><a href="/runs">Back to runs</a></p>')
    return _page(request, "Compare runs", body, "/runs", runs=names)


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request):
    body = f"""{upload_form()}
<p class="muted">Any CSV or JSONL: when its columns are not a format tunelab knows (<code>question</code> and
<code>answer</code>, say), the next step shows its first records and asks which column is which.</p>
<section aria-labelledby="h-files"><h2 id="h-files">Files</h2>{fragment("/studio/f/files")}</section>"""
    return _page(request, "Datasets", body, "/datasets")


@router.get("/datasets/{file_id}", response_class=HTMLResponse)
def dataset(request: Request, file_id: str, model: str | None = None):
    model = model or request.app.state.tl.base
    body = f"""<form class="panel inline" method="get"><label for="inspect-model">Tokenize with model</label>
<input id="inspect-model" name="model" value="{esc(model)}"><button type="submit">Inspect</button></form>
{fragment(f"/studio/f/files/{quote(file_id)}/inspect?model={quote(model)}", "Inspecting (tokenizing every example)…")}"""
    return _page(request, "Dataset", body, "/datasets", file=file_id)


@router.get("/datasets/{file_id}/columns", response_class=HTMLResponse)
def dataset_columns(request: Request, file_id: str):
    return _page(request, "Map the columns", fragment(f"/studio/f/files/{quote(file_id)}/columns",
                                                      "Reading the first records…"), "/datasets", file=file_id)


@router.get("/new", response_class=HTMLResponse)
def new(request: Request, file: str | None = None):
    url = "/studio/f/new" + (f"?file={quote(file)}" if file else "")
    return _page(request, "New fine-tune", fragment(url), "/new")


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request):
    return _page(request, "Jobs", fragment("/studio/f/jobs"), "/jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str):
    body = """<div id="job" class="panel"><p><span class="badge" id="job-status">loading</span>
<span id="job-model"></span></p>
<div class="progress"><label for="job-progress">Progress</label><progress id="job-progress" max="1" value="0"></progress>
<span id="job-eta" aria-live="polite"></span></div>
<p><button id="job-cancel" type="button">Cancel</button> <span class="err" role="alert" id="job-err"></span>
<span id="job-result"></span></p></div>
<section aria-labelledby="h-loss"><h2 id="h-loss">Loss</h2>
<div class="chart" id="job-chart" role="img" aria-label="training and validation loss so far"></div>
<p id="job-points" class="muted"></p></section>
<section aria-labelledby="h-log"><h2 id="h-log">Log</h2><ol id="job-log" class="log" aria-live="polite"></ol></section>"""
    return _page(request, "Job", body, "/jobs", job=job_id)


@router.get("/chat", response_class=HTMLResponse)
def chat(request: Request):
    cols = "".join(f"""<fieldset class="col" data-col="{i}"><legend>Column {i + 1}</legend>
<label><input type="checkbox" name="on{i}" {"checked" if i < 2 else ""}> answer in this column</label>
<label for="model{i}">Model</label><select id="model{i}" name="model{i}" data-models></select>
<label for="kb{i}">Knowledge base</label><select id="kb{i}" name="kb{i}" data-kbs><option value="">none</option></select>
</fieldset>""" for i in range(3))
    body = f"""<form id="chat" class="panel"><div class="cols">{cols}</div>
<label for="system">System prompt</label><textarea id="system" name="system" rows="2"></textarea>
<div class="row"><span><label for="temperature">Temperature</label>
<input id="temperature" name="temperature" type="number" min="0" max="2" step="0.1" value="0"></span>
<span><label for="max_tokens">Max tokens</label>
<input id="max_tokens" name="max_tokens" type="number" min="1" max="2048" value="48"></span></div>
<label for="prompt">Prompt</label><textarea id="prompt" name="prompt" rows="3" required></textarea>
<button type="submit">Send</button> <span class="err" role="alert" id="chat-err"></span></form>
<div id="answers" class="answers" aria-live="polite"></div>"""
    return _page(request, "Chat playground", body, "/chat")


@router.get("/kb", response_class=HTMLResponse)
def kbs(request: Request):
    limit = fmt_bytes(request.app.state.tl.upload_limit)  # what the request guard lets through (serve/guard.py)
    body = f"""<form id="kb-create" class="panel"><h2>New knowledge base</h2>
<label for="kb-name">Name</label><input id="kb-name" name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._-]*">
<label for="kb-files">Documents (.md, .txt, .rst, .html, .pdf; {esc(limit)} in all)</label>
<input id="kb-files" name="files" type="file" multiple required accept=".md,.txt,.rst,.html,.htm,.pdf">
<button type="submit">Create and index</button> <span class="err" role="alert" id="kb-err"></span></form>
<section aria-labelledby="h-kbs"><h2 id="h-kbs">Knowledge bases</h2>{fragment("/studio/f/kbs")}</section>"""
    return _page(request, "Knowledge bases", body, "/kb")


@router.get("/kb/{name}", response_class=HTMLResponse)
def kb(request: Request, name: str):
    check_name(name, "knowledge_base")
    body = f"""<form id="kb-ask" class="panel"><label for="question">Question</label>
<input id="question" name="question" required>
<label for="ask-model">Model</label><select id="ask-model" name="model" data-models></select>
<button type="submit">Ask</button> <span class="err" role="alert" id="ask-err"></span></form>
<div id="kb-answer" aria-live="polite"></div>
{fragment(f"/studio/f/kbs/{name}")}"""
    return _page(request, f"Knowledge base {name}", body, "/kb", kb=name)
