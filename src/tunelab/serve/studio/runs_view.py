"""Runs: the fragments and JSON the Studio's run pages load (every route takes the caller's key).

    GET /studio/api/whoami               {"tenant", "auth"}: checks a key typed in the browser
    GET /studio/f/runs?limit=N           the tenant's runs: status, model, method, final validation loss
    GET /studio/f/runs/NAME              one run: config, loss curves, report (its evaluation tables), export
    GET /studio/api/runs                 the same list as JSON
    GET /studio/api/runs/NAME/metrics    {"name", "train": [[step, loss]], "valid": [[step, val_loss]]}

A run that a job is still writing shows the job's status and links to the job's live page.
Another tenant's run is a 404, as an unknown one is.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from tunelab.export.targets import studio_targets
from tunelab.serve import jobs_db
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import not_found
from tunelab.serve.names import check_name, hide_paths, inside
from tunelab.serve.protocol.studio import Metrics, RunList, WhoAmI
from tunelab.serve.studio.html import esc, fmt_loss, markdown, table
from tunelab.serve.studio.runs_data import (
    list_runs,
    read_config,
    read_metrics,
    run_summary,
)

router = APIRouter()


def run_dir(state, tenant: str, name: str) -> Path:
    check_name(name, "run")
    root = state.tenant_runs(tenant)
    path = inside(root, name) if root.exists() else root / name
    if not (path / "config.yaml").is_file():
        raise not_found("run", name, "run")
    return path


def job_of_runs(state, tenant: str) -> dict[str, dict]:
    """run name -> (id, status) of the newest job that writes it."""
    c = jobs_db.conn(state.db_path)
    rows = c.execute("SELECT id, status, run_name FROM jobs WHERE tenant = ? ORDER BY seq", (tenant,)).fetchall()
    return {r["run_name"]: {"id": r["id"], "status": r["status"]} for r in rows}


def _status(run: dict, job: dict | None) -> str:
    if job and job["status"] in jobs_db.ACTIVE:
        return f'<a class="badge {job["status"]}" href="/jobs/{esc(job["id"])}">{esc(job["status"])}</a>'
    return f'<span class="badge {run["status"]}">{esc(run["status"])}</span>'


def runs_table(runs: list[dict], jobs: dict[str, dict], pick: bool = True) -> str:
    if not runs:
        return '<p class="muted">No runs yet: <a href="/new">start a fine-tune</a>.</p>'
    rows = []
    for r in runs:
        n = esc(r["name"])
        box = f'<input type="checkbox" name="runs" value="{n}" aria-label="overlay {n}">' if pick else ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["mtime"]))
        rows.append(([box] if pick else []) + [f'<a href="/runs/{n}">{n}</a>', _status(r, jobs.get(r["name"])),
                                              esc(r["model"]), esc(r["method"]), esc(r["task"]),
                                              fmt_loss(r["final_valid_loss"]), esc(when)])
    head = (["overlay"] if pick else []) + ["run", "status", "model", "method", "task", "final valid loss", "updated"]
    out = table(head, rows, cls="runs list")
    if pick:
        out = (f'<form id="overlay" action="/compare" method="get">{out}<button type="submit">Overlay selected '
               'curves</button> <span class="err" role="alert" id="overlay-err"></span></form>')
    return out


@router.get("/studio/api/whoami")
def whoami(request: Request, tenant: str = Depends(current_tenant)) -> WhoAmI:
    return {"tenant": tenant, "auth": request.app.state.tl.auth}


@router.get("/studio/api/runs")
def runs_json(request: Request, tenant: str = Depends(current_tenant)) -> RunList:
    return {"object": "list", "data": list_runs(request.app.state.tl.tenant_runs(tenant))}


@router.get("/studio/f/runs", response_class=HTMLResponse)
def runs_fragment(request: Request, limit: int = 0, tenant: str = Depends(current_tenant)):
    state = request.app.state.tl
    runs = list_runs(state.tenant_runs(tenant))
    if limit > 0:
        more = len(runs) - limit
        html = runs_table(runs[:limit], job_of_runs(state, tenant), pick=False)
        return html + (f'<p><a href="/runs">All {len(runs)} runs</a></p>' if more > 0 else "")
    return runs_table(runs, job_of_runs(state, tenant))


@router.get("/studio/api/runs/{name}/metrics")
def metrics(request: Request, name: str, tenant: str = Depends(current_tenant)) -> Metrics:
    return {"name": name, **read_metrics(run_dir(request.app.state.tl, tenant, name))}


def _config_rows(cfg: dict, state) -> list[list[str]]:
    rows = []
    for section in ("model", "data", "method", "train"):
        for k, v in (cfg.get(section) or {}).items():
            if v not in (None, "", {}, []):
                rows.append([esc(f"{section}.{k}"), f"<code>{esc(hide_paths(str(v), state))}</code>"])
    return rows


def export_buttons() -> str:
    """One button per export target the Studio offers (`Target.studio` in tunelab.export.targets.REGISTRY)."""
    return "".join(f'<button type="button" data-export="{esc(t.name)}">{esc(t.label)}</button> '
                   for t in studio_targets())


@router.get("/studio/f/runs/{name}", response_class=HTMLResponse)
def run_fragment(request: Request, name: str, tenant: str = Depends(current_tenant)):
    state = request.app.state.tl
    path = run_dir(state, tenant, name)
    s, cfg = run_summary(path), read_config(path)
    job = job_of_runs(state, tenant).get(name)
    n = esc(name)
    facts = (f'<p>{_status(s, job)} · model <b>{esc(s["model"])}</b> · method <b>{esc(s["method"])}</b> · '
             f'task {esc(s["task"])} · final validation loss <b>{fmt_loss(s["final_valid_loss"])}</b>'
             + (f' · <a href="/jobs/{esc(job["id"])}">job</a>' if job else "") + "</p>")
    chart = (f'<section aria-labelledby="h-curve"><h2 id="h-curve">Loss curves</h2><div class="chart" role="img" '
             f'aria-label="training and validation loss of {n}" data-chart-runs="{n}"></div>'
             f'<p class="err" role="alert"></p><p><a href="/compare?runs={n}">Overlay with other runs</a></p></section>')
    report = path / "report.md"
    rep = (markdown(hide_paths(report.read_text(encoding="utf-8"), state)) if report.is_file()
           else '<p class="muted">No report yet.</p>')
    buttons = export_buttons()
    export = ('<section aria-labelledby="h-export"><h2 id="h-export">Export</h2>'
              + (f'<div data-export-run="{n}">{buttons}<span class="err" role="alert"></span>'
                 '<div class="export-out" aria-live="polite"></div></div>' if s["status"] == "finished"
                 else '<p class="muted">Export is possible once the run has finished.</p>') + "</section>")
    rows = _config_rows(cfg, state)
    config = (f'<details><summary>Config ({len(rows)} settings)</summary>'
              f'{table(["setting", "value"], rows)}</details>')
    return (facts + chart + f'<section aria-labelledby="h-report"><h2 id="h-report">Report and evaluation</h2>{rep}'
            "</section>" + export + f'<section aria-labelledby="h-config"><h2 id="h-config">Config</h2>{config}</section>')
