"""`/v1/fine_tuning/jobs`: fine-tuning jobs, shaped like OpenAI's API, run by serve/job_runner.py.

    POST /v1/fine_tuning/jobs                     create -> the job (status validating_files)
    GET  /v1/fine_tuning/jobs                     ?after, limit (20), newest first
    GET  /v1/fine_tuning/jobs/{id}                the job
    POST /v1/fine_tuning/jobs/{id}/cancel         -> the job, cancelled (its worker killed)
    GET  /v1/fine_tuning/jobs/{id}/events         ?after, limit (20), newest first; ?stream=true:
                                                  Server-Sent Events, oldest first, each `data: <event>`,
                                                  until the job ends, then `data: [DONE]`
    GET  /v1/fine_tuning/jobs/{id}/checkpoints    ?after, limit (10), newest first

Create takes model, training_file, validation_file, hyperparameters, method {type: supervised |
dpo, <type>: {hyperparameters}} (the method's hyperparameters win over the top-level ones),
suffix, seed, metadata. Hyperparameters ("auto" = tunelab's default) are resolved when the job
is made:

    n_epochs                  int 1..100       auto: train.epochs (3)
    batch_size                int 1..1024      auto: train.batch_size (8)
    learning_rate_multiplier  number (0, 100]  auto: 1; lr = default_lr(method) x multiplier
    beta (dpo)                number (0, 10]   auto: preference.beta (0.1)
    finetuning_type           lora|qlora|full  auto: lora (method.name; a server job override still wins)

Every refusal is a 4xx in OpenAI's shape and writes nothing: an unknown key or model, another
tenant's or an unknown file (404), a file that is not `processed`, a file whose kind does not
fit the method (supervised: chat examples; dpo: preference pairs), a suffix that is not a NAME.
`model` is an alias, the served base, a local model folder (config.json) or .gguf file of the
server's machine (read with the server's rights), or a hub id when the hub is reachable.
The run is named `ft-<suffix>-<8 hex of the id>` (or `ft-<8 hex>`); it becomes the job's
`fine_tuned_model` when the job succeeds, and the inference half serves it from its DONE marker.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunelab.config import PreferenceConfig, TrainConfig
from tunelab.serve import jobs_db
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.job_runner import JobRunner
from tunelab.serve.names import check_name

router = APIRouter()
FIELDS = {"model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata",
          "integrations"}
FINETUNING_TYPES = ("lora", "qlora", "full")  # method.name of the job's run
# name: (kind, low (exclusive for floats), high, auto); a str kind: (str, choices, None, auto)
HYPER = {"n_epochs": (int, 1, 100, lambda: int(TrainConfig.model_fields["epochs"].default)),
         "batch_size": (int, 1, 1024, lambda: TrainConfig.model_fields["batch_size"].default),
         "learning_rate_multiplier": (float, 0.0, 100.0, lambda: 1.0),
         "beta": (float, 0.0, 10.0, lambda: PreferenceConfig.model_fields["beta"].default),
         "finetuning_type": (str, FINETUNING_TYPES, None, lambda: "lora")}
KINDS = {"supervised": ("sft",), "dpo": ("preference", "openai_dpo")}
KIND_TEXT = {"supervised": "chat examples (messages, prompt/completion, ...)",
             "dpo": "preference pairs (prompt, chosen, rejected; or OpenAI's input / preferred_output)"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def startup(state) -> None:
    """Tables, then the job runner (recovering the jobs a killed server left running)."""
    jobs_db.conn(state.db_path)
    runner = JobRunner(state)
    state.extra["jobs.runner"] = runner
    runner.start()


def shutdown(state) -> None:
    runner = state.extra.pop("jobs.runner", None)
    if runner is not None:
        runner.shutdown()


def _runner(state) -> JobRunner | None:
    return state.extra.get("jobs.runner")


# ---- checking a create request -----------------------------------------------------------------------------
def _bad(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def check_model(name, state) -> str:
    """The model to train (a local path made absolute), or a 404 naming `model`."""
    from tunelab.models.registry import ALIASES, hub_offline

    if not isinstance(name, str) or not name.strip():
        raise _bad("Missing required parameter: 'model'", "model", "missing_required_parameter")
    p = Path(name).expanduser()
    if name in ALIASES or (name == state.base and not p.exists()):
        return name
    if (p.is_dir() and (p / "config.json").is_file()) or (p.suffix == ".gguf" and p.is_file()):
        return str(p.resolve())  # the worker runs in the job's folder: a relative path would move
    if _HUB_ID.fullmatch(name) and not p.exists() and not hub_offline():
        return name
    raise not_found("model", name, "model")


def hyperparameters(given, method: str) -> dict:
    """The resolved hyperparameters of `method` (see the module docstring); 400 on anything else."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise _bad("hyperparameters must be an object", "hyperparameters")
    names = [k for k in HYPER if k != "beta" or method == "dpo"]
    out = {}
    for key in given:
        if key not in names:
            raise _bad(f"unknown hyperparameter '{key}' for method {method}: use {', '.join(names)}",
                       f"hyperparameters.{key}")
    for key in names:
        kind, lo, hi, auto = HYPER[key]
        value = given.get(key, "auto")
        if value == "auto":
            out[key] = auto()
            continue
        if kind is str:
            if value not in lo:
                raise _bad(f"invalid hyperparameter {key}={value!r}: use 'auto' or one of {', '.join(lo)}",
                           f"hyperparameters.{key}")
            out[key] = value
            continue
        number = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        ok = number and not isinstance(value, bool)
        if not ok or not ((lo <= value <= hi) if kind is int else (lo < value <= hi)):
            span = f"an integer in {lo}..{hi}" if kind is int else f"a number in ({lo:g}, {hi:g}]"
            raise _bad(f"invalid hyperparameter {key}={value!r}: use 'auto' or {span}", f"hyperparameters.{key}")
        out[key] = kind(value)
    return out


def _method(body: dict) -> tuple[str, dict | None]:
    method = body.get("method") or {"type": "supervised"}
    if not isinstance(method, dict) or method.get("type", "supervised") not in KINDS:
        kind = method.get("type") if isinstance(method, dict) else method
        raise _bad(f"method type '{kind}' is not available: use supervised or dpo", "method.type")
    kind = method.get("type", "supervised")
    extra = set(method) - {"type", kind}
    if extra:
        raise _bad(f"unknown method field(s) {sorted(extra)} for type {kind}", "method")
    sub = method.get(kind) or {}
    if not isinstance(sub, dict) or set(sub) - {"hyperparameters"}:
        raise _bad(f"method.{kind} takes only 'hyperparameters'", f"method.{kind}")
    return kind, sub.get("hyperparameters")


def _training_file(c, tenant: str, fid, param: str, method: str) -> str:
    if not isinstance(fid, str) or not fid:
        raise _bad(f"Missing required parameter: '{param}'", param, "missing_required_parameter")
    row = jobs_db.get_file(c, tenant, fid, param)
    if row["status"] != "processed":
        raise _bad(f"file {fid} is not a valid training file: {row['status_details']}", param, "invalid_file")
    if row["kind"] not in KINDS[method]:
        raise _bad(f"file {fid} does not hold what a {method} job trains on: {KIND_TEXT[method]}", param,
                   "invalid_file_format")
    return fid


def _metadata(m) -> dict | None:
    if m is None:
        return None
    if not isinstance(m, dict) or len(m) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in m.items()):
        raise _bad("metadata is at most 16 string pairs (keys up to 64 characters, values up to 512)", "metadata")
    return m


def new_job(state, tenant: str, body: dict) -> dict:
    """Check a create request (see the module docstring) and record the job; returns its row."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", None, "invalid_body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    if body.get("integrations"):
        raise _bad("integrations are not available on this server", "integrations")
    c = jobs_db.conn(state.db_path)
    model = check_model(body.get("model"), state)
    method, method_hp = _method(body)
    top = body.get("hyperparameters")
    if top is not None and not isinstance(top, dict):
        raise _bad("hyperparameters must be an object", "hyperparameters")
    hp = hyperparameters({**(top or {}), **(method_hp or {})}, method)
    train = _training_file(c, tenant, body.get("training_file"), "training_file", method)
    val = body.get("validation_file")
    if val is not None:
        val = _training_file(c, tenant, val, "validation_file", method)
    suffix = body.get("suffix")
    if suffix is not None:
        check_name(suffix, "suffix")
        if len(suffix) > 40:
            raise _bad("suffix is at most 40 characters", "suffix")
    seed = body.get("seed")
    if seed is None:
        seed = random.randrange(2**31)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise _bad(f"seed must be an integer in 0..{2**31 - 1}", "seed")
    metadata = _metadata(body.get("metadata"))
    job_id = jobs_db.new_id("ftjob")
    run_name = check_name(f"ft-{suffix}-{job_id[-8:]}" if suffix else f"ft-{job_id[-8:]}", "suffix")
    if (state.tenant_runs(tenant) / run_name).exists():  # 32 random bits of the id collided: take them all
        run_name = check_name(f"ft-{suffix}-{job_id[6:]}" if suffix else f"ft-{job_id[6:]}", "suffix")
    row = {"id": job_id, "tenant": tenant, "model": model, "training_file": train, "validation_file": val,
           "method": {"type": method}, "hyperparameters": hp, "suffix": suffix, "seed": seed, "metadata": metadata,
           "status": "validating_files", "run_name": run_name, "created_at": jobs_db.now()}
    jobs_db.insert_job(c, row)
    jobs_db.add_event(c, row, f"Validating training file: {train}" + (f" and validation file: {val}" if val else ""))
    return jobs_db.get_job(c, tenant, job_id)


# ---- routes ------------------------------------------------------------------------------------------------
async def _json(request: Request):
    try:
        return await request.json()
    except ValueError:
        raise _bad("the request body is not valid JSON", None, "invalid_body") from None


@router.post("/v1/fine_tuning/jobs")
async def create_job(request: Request, tenant: str = Depends(current_tenant)):
    state = request.app.state.tl
    row = await run_in_threadpool(new_job, state, tenant, await _json(request))
    if (runner := _runner(state)) is not None:
        runner.notify()
    return jobs_db.job_object(row)


@router.get("/v1/fine_tuning/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = 20, tenant: str = Depends(current_tenant)):
    c = jobs_db.conn(request.app.state.tl.db_path)
    rows, more = jobs_db.page(c, "jobs", "tenant = ?", (tenant,), after, limit, kind="job")
    return jobs_db.list_object([jobs_db.job_object(r) for r in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve_job(request: Request, job_id: str, tenant: str = Depends(current_tenant)):
    return jobs_db.job_object(jobs_db.get_job(jobs_db.conn(request.app.state.tl.db_path), tenant, job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str, tenant: str = Depends(current_tenant)):
    state = request.app.state.tl
    c = jobs_db.conn(state.db_path)
    job = jobs_db.get_job(c, tenant, job_id)
    if not jobs_db.transition(c, job, "cancelled", jobs_db.ACTIVE, "The job was cancelled", finished_at=jobs_db.now()):
        status = jobs_db.get_job(c, tenant, job_id)["status"]
        raise APIError(409, f"job {job_id} is {status} already: only a job that has not ended can be cancelled",
                       code="job_not_cancellable")
    if (runner := _runner(state)) is not None:
        runner.cancel(job_id)
    return jobs_db.job_object(jobs_db.get_job(c, tenant, job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def list_events(request: Request, job_id: str, after: str | None = None, limit: int = 20, stream: bool = False,
                      tenant: str = Depends(current_tenant)):
    state = request.app.state.tl
    job = await run_in_threadpool(lambda: jobs_db.get_job(jobs_db.conn(state.db_path), tenant, job_id))
    if stream:
        return StreamingResponse(_event_stream(request, state.db_path, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def page():
        c = jobs_db.conn(state.db_path)
        return jobs_db.page(c, "events", "job_id = ? AND tenant = ?", (job_id, tenant), after, limit, kind="event")

    rows, more = await run_in_threadpool(page)
    return jobs_db.list_object([jobs_db.event_object(r) for r in rows], more)


async def _event_stream(request: Request, db_path, job: dict, poll: float = 0.25, keepalive: float = 15.0):
    """The job's events, oldest first, as they are recorded; ends after the job ends (the status and
    its last event are one transaction, so one more read after seeing the end gets everything)."""
    seq, quiet = 0, 0.0

    def read():
        c = jobs_db.conn(db_path)
        return jobs_db.events_since(c, job["id"], seq), jobs_db.job_by_id(c, job["id"])["status"]

    while True:
        rows, status = await run_in_threadpool(read)
        for r in rows:
            seq = r["seq"]
            yield f"data: {json.dumps(jobs_db.event_object(r))}\n\n"
        if status in jobs_db.TERMINAL:
            rows, _ = await run_in_threadpool(read)
            for r in rows:
                yield f"data: {json.dumps(jobs_db.event_object(r))}\n\n"
            yield "data: [DONE]\n\n"
            return
        if await request.is_disconnected():
            return
        quiet = 0.0 if rows else quiet + poll
        if quiet >= keepalive:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(request: Request, job_id: str, after: str | None = None, limit: int = 10,
                     tenant: str = Depends(current_tenant)):
    c = jobs_db.conn(request.app.state.tl.db_path)
    jobs_db.get_job(c, tenant, job_id)
    rows, more = jobs_db.page(c, "checkpoints", "job_id = ? AND tenant = ?", (job_id, tenant), after, limit,
                              kind="checkpoint")
    return jobs_db.list_object([jobs_db.checkpoint_object(r) for r in rows], more)
