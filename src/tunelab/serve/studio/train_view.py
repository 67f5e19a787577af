"""New fine-tune and the jobs list: the form's fragment, the live memory estimate, the jobs table.

    GET /studio/f/new?file=ID       the form: dataset (the tenant's processed files), model, method,
                                    epochs, batch size, learning-rate multiplier, suffix
    GET /studio/api/memory?model=M&method=lora|qlora|full&batch=B&seq=S&r=R
                                    tunelab memory's estimate: {"total", "available", "fits", "rows", ...}
    GET /studio/f/jobs?limit=N      the tenant's jobs, newest first

The form posts to POST /v1/fine_tuning/jobs (studio.js). The method a job trains is the server's
(LoRA, or `method.name` of its `job_overrides`): the form estimates any of the three, and says so
when the one picked is not the one the server's jobs train.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.serve import jobs_db
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.model_names import check_model
from tunelab.serve.protocol.studio import MemoryEstimate
from tunelab.serve.studio.html import esc, fmt_bytes, table, upload_form

router = APIRouter()
METHODS = ("lora", "qlora", "full")


def pinned_method(state) -> str:
    """The method.name a server job override pins every job to ('' when none: the job's
    `finetuning_type` hyperparameter decides)."""
    for o in state.job_overrides:
        key, _, value = str(o).partition("=")
        if key.strip() == "method.name":
            return value.strip()
    return ""


def memory_estimate(model: str, method: str, batch: int, seq: int, r: int, state) -> dict:
    from tunelab.memory.estimator import estimate

    if method not in METHODS:
        raise APIError(400, f"method '{method}' has no estimate here: use lora, qlora or full", param="method")
    ident = check_model(state, model)  # the base or an alias, never a path (serve/model_names.py)
    try:
        e = estimate(ident, method, batch, seq, r=r)
    except TunelabError as err:
        raise APIError(400, err.one_line().replace(ident, model), param="model", code="estimate_failed") from None
    return {"model": model, "method": method, "batch": batch, "seq": seq, "r": r, "device": e.device,
            "total": e.total, "available": e.available, "fits": e.fits, "params": e.params, "trainable": e.trainable,
            "rows": [{"component": c, "bytes": b, "how": how} for c, b, how in e.rows]}


@router.get("/studio/api/memory")
async def memory(request: Request, model: str, method: str = "lora", batch: int = 8, seq: int = 512, r: int = 16,
                 tenant: str = Depends(current_tenant)) -> MemoryEstimate:
    if not (1 <= batch <= 1024 and 8 <= seq <= 1 << 20 and 1 <= r <= 1024):
        raise APIError(400, "batch must be 1..1024, seq 8..1048576 and r 1..1024", param="batch")
    return await run_in_threadpool(memory_estimate, model, method, batch, seq, r, request.app.state.tl)


def no_file_yet(upload_limit: int) -> str:
    """What /new shows before the tenant has a training file: what a file holds, and the upload itself."""
    return f"""<section class="panel nofile" aria-labelledby="h-nofile"><h2 id="h-nofile">No training file yet</h2>
<p>A fine-tune learns from examples of what the model should do. Upload one file of them here (up to
{esc(fmt_bytes(upload_limit))}); the form to start the job appears once the file is read.</p>
<ul>
<li><b>Questions and answers, or prompts and replies</b>: a CSV, TSV or JSONL with a column for each, e.g.
<code>prompt</code> and <code>completion</code>. Other names (<code>question</code>, <code>answer</code>,
<code>input</code>, <code>output</code>, ...) are fine: the Studio shows the first records and asks which column
is which.</li>
<li><b>Conversations</b>: JSONL lines <code>{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}]}}</code>
(OpenAI's format), or ShareGPT's <code>conversations</code>, or Alpaca's <code>instruction</code> / <code>output</code>.</li>
<li><b>Preference pairs</b> (DPO): <code>prompt</code>, <code>chosen</code>, <code>rejected</code>.</li>
</ul>
<p>For example, a CSV:</p>
<pre class="sample">question,answer
What is the capital of France?,Paris.
How many legs has a spider?,Eight.</pre>
<p class="muted">A few dozen examples already change how a small model answers; a few hundred do better. A second
file of held-out examples, uploaded the same way, can be picked as the validation file.</p></section>
{upload_form("Upload a training file")}
<p class="muted">Already have files? They are on <a href="/datasets">Datasets</a>; a refused one can be mapped there.</p>"""


def _options(rows, chosen: str | None, empty: str | None = None) -> str:
    out = [f'<option value="">{esc(empty)}</option>'] if empty is not None else []
    out += [f'<option value="{esc(r["id"])}"{" selected" if r["id"] == chosen else ""}>{esc(r["filename"])} '
            f'({esc(r["kind"])}, {esc(r["id"][-6:])})</option>' for r in rows]
    return "".join(out)


@router.get("/studio/f/new", response_class=HTMLResponse)
def new_fragment(request: Request, file: str | None = None, tenant: str = Depends(current_tenant)):
    from tunelab.models.registry import ALIASES

    state = request.app.state.tl
    c = jobs_db.conn(state.db_path)
    rows, _ = jobs_db.page(c, "files", "tenant = ? AND status = 'processed'", (tenant,), None, 10000, kind="file")
    if not rows:
        return no_file_yet(state.upload_limit)
    models = "".join(f'<option value="{esc(m)}">' for m in dict.fromkeys([state.base, *ALIASES]))
    pinned = pinned_method(state)
    trains = pinned or "lora"
    methods = "".join(f'<option value="{m}"{" selected" if m == trains else ""}>{m}</option>' for m in METHODS)
    note = (f"This server's jobs train <b>{esc(pinned)}</b> (its job settings decide)." if pinned
            else "The job trains the method picked here.")
    return f"""<form id="newjob" class="panel" data-job-method="{esc(pinned)}">
<label for="training_file">Dataset</label><select id="training_file" name="training_file" required>{_options(rows, file)}</select>
<label for="validation_file">Validation file (optional)</label>
<select id="validation_file" name="validation_file">{_options(rows, None, "none")}</select>
<label for="model">Model</label><input id="model" name="model" list="models" value="{esc(state.base)}" required>
<datalist id="models">{models}</datalist>
<label for="method">Method</label><select id="method" name="method">{methods}</select>
<p class="muted" id="method-note">{note}</p>
<div class="row"><span><label for="n_epochs">Epochs</label>
<input id="n_epochs" name="n_epochs" type="number" min="1" max="100" value="3"></span>
<span><label for="batch_size">Batch size</label><input id="batch_size" name="batch_size" type="number" min="1" max="1024" value="8"></span>
<span><label for="seq">Tokens per example (estimate)</label><input id="seq" name="seq" type="number" min="8" value="512"></span>
<span><label for="lr_mult">Learning-rate multiplier</label>
<input id="lr_mult" name="learning_rate_multiplier" type="number" min="0.01" max="100" step="any" value="1"></span></div>
<label for="suffix">Suffix (names the run ft-SUFFIX-…)</label>
<input id="suffix" name="suffix" pattern="[A-Za-z0-9][A-Za-z0-9._-]*" maxlength="40">
<section id="estimate" class="estimate" aria-live="polite" aria-labelledby="h-est"><h2 id="h-est">Memory estimate</h2>
<p class="muted">computing…</p></section>
<button type="submit" id="start">Start fine-tune</button> <span class="err" role="alert" id="new-err"></span>
</form>"""


def _ago(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "—"


@router.get("/studio/f/jobs", response_class=HTMLResponse)
def jobs_fragment(request: Request, limit: int = 100, tenant: str = Depends(current_tenant)):
    c = jobs_db.conn(request.app.state.tl.db_path)
    rows, more = jobs_db.page(c, "jobs", "tenant = ?", (tenant,), None, max(1, min(limit, 1000)), kind="job")
    if not rows:
        return '<p class="muted">No jobs yet: <a href="/new">start a fine-tune</a>.</p>'
    cells = []
    for r in rows:
        j = esc(r["id"])
        run = (f'<a href="/runs/{esc(r["run_name"])}">{esc(r["run_name"])}</a>' if r["status"] != "failed"
               else esc(r["run_name"]))
        cells.append([f'<a href="/jobs/{j}">{j[-12:]}</a>', (f'<span class="badge {esc(r["status"])}">'
                      f'{esc(r["status"])}</span>'), esc(r["model"].rsplit("/", 1)[-1]), run, esc(_ago(r["created_at"]))])
    out = table(["job", "status", "model", "run", "created"], cells, cls="list")
    return out + ('<p><a href="/jobs">All jobs</a></p>' if more else "")
