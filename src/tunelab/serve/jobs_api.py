"""`/v1/fine_tuning/jobs`: fine-tuning jobs, shaped like OpenAI's API, run by serve/job_runner.py.

    POST /v1/fine_tuning/jobs                     create -> the job (status validating_files)
    GET  /v1/fine_tuning/jobs                     ?after, limit (20), newest first
    GET  /v1/fine_tuning/jobs/{id}                the job
    POST /v1/fine_tuning/jobs/{id}/cancel         -> the job, cancelled (its worker killed)
    POST /v1/fine_tuning/jobs/{id}/pause          a running job -> paused: its worker is interrupted
                                                  (SIGINT: the engine saves a checkpoint) and not restarted
    POST /v1/fine_tuning/jobs/{id}/resume         a paused job -> queued: it runs again from that checkpoint
    GET  /v1/fine_tuning/jobs/{id}/events         ?after, limit (20), newest first; ?stream=true:
                                                  Server-Sent Events, oldest first, each `data: <event>`,
                                                  until the job ends, then `data: [DONE]`
    GET  /v1/fine_tuning/jobs/{id}/checkpoints    ?after, limit (10), newest first

Create takes model, training_file, validation_file, hyperparameters, method {type: supervised |
dpo | reinforcement, <type>: {hyperparameters}; reinforcement's also {grader}} (the method's
hyperparameters win over the top-level ones), suffix, seed, metadata: `FineTuningJobCreate`
(serve/protocol/jobs.py) checks its shape, then `ServingJobs` what it names. What varies by method
(task, file kinds, hyperparameters, config) is serve/job_methods.py. Hyperparameters ("auto" =
tunelab's default) are resolved when the job is made:

    n_epochs                  int 1..100       auto: train.epochs (3)
    batch_size                int 1..1024      auto: train.batch_size (8)
    learning_rate_multiplier  number (0, 100]  auto: 1; lr = default_lr(method) x multiplier
    beta (dpo)                number (0, 10]   auto: preference.beta (0.1)
    finetuning_type           lora|qlora|full  auto: lora (method.name; a server job override still wins)
    compute_multiplier        number (0, 10]   reinforcement; auto: 1; grpo.num_generations = max(2, round(4 x it))
    eval_interval             integer | auto   reinforcement; train.eval_every (auto: held-out pass before and after)
    eval_samples              "auto"           reinforcement; any other value: 400 (the held-out pass is greedy)
    reasoning_effort          "default"        reinforcement; any other value: 400

Pause and resume follow OpenAI's rules: only a `running` job pauses, only a `paused` job resumes;
any other status is a 400 (invalid_request_error, param null, code job_not_pausable /
job_not_resumable). A paused job can be cancelled. A paused job's worker that finishes the run
before the interrupt reaches it makes the job succeeded, as a running one.

Every refusal is a 4xx in OpenAI's shape and writes nothing (the shape first, then the lookups): an unknown key or model, another
tenant's or an unknown file (404), a file that is not `processed`, a file whose kind does not
fit the method (supervised: chat examples; dpo: preference pairs; reinforcement: prompts, its
validation file too), a suffix that is not a NAME.
`model` is an alias, the served base, a local model folder (config.json) or .gguf file of the
server's machine (read with the server's rights), or a hub id when the hub is reachable.
The run is named `ft-<suffix>-<8 hex of the id>` (or `ft-<8 hex>`); it becomes the job's
`fine_tuned_model` when the job succeeds, and the inference half serves it from its DONE marker.
"""

from __future__ import annotations

import asyncio
import random

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunelab.serve import jobs_db, model_names
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.generation import SSE_HEADERS, sse
from tunelab.serve.job_methods import METHODS
from tunelab.serve.job_runner import JobRunner, checkpoint_steps, run_dir
from tunelab.serve.names import check_name
from tunelab.serve.protocol.common import json_body
from tunelab.serve.protocol.jobs import (
    HYPER,
    KIND_TEXT,
    KINDS,
    CheckpointList,
    EventList,
    FineTuningJob,
    FineTuningJobCreate,
    JobCheckpoint,
    JobEvent,
    JobList,
    bad,
    hyperparameters,
)

__all__ = ["HYPER", "ServingJobs", "hyperparameters", "check_model"]


def startup(state) -> None:
    """Tables, then the job runner (recovering the jobs a killed server left running)."""
    jobs_db.conn(state.db_path)
    state.jobs_runner = JobRunner(state)
    state.jobs_runner.start()


def shutdown(state) -> None:
    runner, state.jobs_runner = state.jobs_runner, None
    if runner is not None:
        runner.shutdown()


def check_model(name, state) -> str:
    """The model to train: the served base (a path made absolute) or an alias of `tunelab models`; any
    other name, a server path or a hub id included, is a 404 naming `model` (serve/model_names.py)."""
    return model_names.check_model(state, name)


class ServingJobs:
    """The jobs of one tenant: create (what the request names looked up, the job recorded), list,
    retrieve, cancel, events (a page or a stream) and checkpoints."""

    def __init__(self, state, tenant: str):
        self.state, self.tenant = state, tenant

    def _db(self):
        return jobs_db.conn(self.state.db_path)

    def _training_file(self, c, fid: str, param: str, method: str) -> str:
        row = jobs_db.get_file(c, self.tenant, fid, param)
        if row["status"] != "processed":
            raise bad(f"file {fid} is not a valid training file: {row['status_details']}", param, "invalid_file")
        if row["kind"] not in KINDS[method]:
            raise bad(f"file {fid} does not hold what a {method} job trains on: {KIND_TEXT[method]}", param,
                      "invalid_file_format")
        return fid

    def create(self, req: FineTuningJobCreate) -> FineTuningJob:
        """Look up what a checked request names and record the job (blocking)."""
        state, tenant, c = self.state, self.tenant, self._db()
        model = check_model(req.model, state)
        method, hp = req.method.type, req.resolved_hyperparameters()
        train = self._training_file(c, req.training_file, "training_file", method)
        val = req.validation_file
        if val is not None and METHODS[method].validation is not None:
            raise bad(f"method {method} takes no validation_file: {METHODS[method].validation}", "validation_file",
                      "unsupported_parameter")
        if val is not None:
            val = self._training_file(c, val, "validation_file", method)
        suffix = req.suffix
        seed = random.randrange(2**31) if req.seed is None else req.seed
        job_id = jobs_db.new_id("ftjob")
        run_name = check_name(f"ft-{suffix}-{job_id[-8:]}" if suffix else f"ft-{job_id[-8:]}", "suffix")
        if (state.tenant_runs(tenant) / run_name).exists():  # 32 random bits of the id collided: take them all
            run_name = check_name(f"ft-{suffix}-{job_id[6:]}" if suffix else f"ft-{job_id[6:]}", "suffix")
        row = {"id": job_id, "tenant": tenant, "model": model, "training_file": train, "validation_file": val,
               "method": {"type": method, **req.method_extra()}, "hyperparameters": hp, "suffix": suffix, "seed": seed,
               "metadata": req.metadata, "status": "validating_files", "run_name": run_name,
               "created_at": jobs_db.now()}
        jobs_db.insert_job(c, row)
        jobs_db.add_event(c, row, f"Validating training file: {train}" + (f" and validation file: {val}" if val else ""))
        job = FineTuningJob.from_row(jobs_db.get_job(c, tenant, job_id))  # as made: read before the runner wakes
        if state.jobs_runner is not None:
            state.jobs_runner.notify()
        return job

    def list(self, after: str | None, limit: int) -> JobList:
        rows, more = jobs_db.page(self._db(), "jobs", "tenant = ?", (self.tenant,), after, limit, kind="job")
        return JobList.of([FineTuningJob.from_row(r) for r in rows], more)

    def retrieve(self, job_id: str) -> FineTuningJob:
        return FineTuningJob.from_row(jobs_db.get_job(self._db(), self.tenant, job_id))

    def cancel(self, job_id: str) -> FineTuningJob:
        c = self._db()
        job = jobs_db.get_job(c, self.tenant, job_id)
        if not jobs_db.transition(c, job, "cancelled", jobs_db.ACTIVE, "The job was cancelled",
                                  finished_at=jobs_db.now()):
            status = jobs_db.get_job(c, self.tenant, job_id)["status"]
            raise APIError(409, f"job {job_id} is {status} already: only a job that has not ended can be cancelled",
                           code="job_not_cancellable")
        if self.state.jobs_runner is not None:
            self.state.jobs_runner.cancel(job_id)
        return self.retrieve(job_id)

    def pause(self, job_id: str) -> FineTuningJob:
        """running -> paused: the worker is interrupted (it checkpoints) and the runner does not restart it."""
        c = self._db()
        job = jobs_db.get_job(c, self.tenant, job_id)
        if not jobs_db.transition(c, job, "paused", ("running",), "The job was paused: it stops at a checkpoint"):
            raise bad(f"job {job_id} is {jobs_db.get_job(c, self.tenant, job_id)['status']}: only a running job "
                      "can be paused", None, "job_not_pausable")
        paused = self.retrieve(job_id)
        if self.state.jobs_runner is not None:
            self.state.jobs_runner.interrupt(job_id)
        return paused

    def resume(self, job_id: str) -> FineTuningJob:
        """paused -> queued: the runner starts it again, from the run's last checkpoint."""
        c = self._db()
        job = jobs_db.get_job(c, self.tenant, job_id)
        steps = checkpoint_steps(run_dir(self.state, job))
        where = f"resumes from its checkpoint at step {steps[-1]}" if steps else "starts again (no checkpoint yet)"
        if not jobs_db.transition(c, job, "queued", ("paused",), f"The job was resumed: it is queued and {where}",
                                  worker_pid=None):
            raise bad(f"job {job_id} is {jobs_db.get_job(c, self.tenant, job_id)['status']}: only a paused job "
                      "can be resumed", None, "job_not_resumable")
        resumed = self.retrieve(job_id)  # as resumed (queued): read before the runner wakes
        if self.state.jobs_runner is not None:
            self.state.jobs_runner.notify()
        return resumed

    def job_row(self, job_id: str) -> dict:
        return jobs_db.get_job(self._db(), self.tenant, job_id)

    def events(self, job_id: str, after: str | None, limit: int) -> EventList:
        rows, more = jobs_db.page(self._db(), "events", "job_id = ? AND tenant = ?", (job_id, self.tenant), after,
                                  limit, kind="event")
        return EventList.of([JobEvent.from_row(r) for r in rows], more)

    async def event_stream(self, request: Request, job: dict, poll: float = 0.25, keepalive: float = 15.0):
        """The job's events, oldest first, as they are recorded; ends after the job ends (the status and
        its last event are one transaction, so one more read after seeing the end gets everything)."""
        seq, quiet = 0, 0.0

        def read():
            c = self._db()
            return jobs_db.events_since(c, job["id"], seq), jobs_db.job_by_id(c, job["id"])["status"]

        while True:
            rows, status = await run_in_threadpool(read)
            for r in rows:
                seq = r["seq"]
                yield sse(JobEvent.from_row(r))
            if status in jobs_db.TERMINAL:
                rows, _ = await run_in_threadpool(read)
                for r in rows:
                    yield sse(JobEvent.from_row(r))
                yield "data: [DONE]\n\n"
                return
            if await request.is_disconnected():
                return
            quiet = 0.0 if rows else quiet + poll
            if quiet >= keepalive:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll)

    def checkpoints(self, job_id: str, after: str | None, limit: int) -> CheckpointList:
        c = self._db()
        jobs_db.get_job(c, self.tenant, job_id)
        rows, more = jobs_db.page(c, "checkpoints", "job_id = ? AND tenant = ?", (job_id, self.tenant), after, limit,
                                  kind="checkpoint")
        return CheckpointList.of([JobCheckpoint.from_row(r) for r in rows], more)


# ---- routes (serve/routes.py mounts them) ------------------------------------------------------------------
def _jobs(request: Request, tenant: str) -> ServingJobs:
    return ServingJobs(request.app.state.tl, tenant)


async def create_job(request: Request, tenant: str = Depends(current_tenant),  # the key first, then the body
                     body: FineTuningJobCreate = Depends(json_body(FineTuningJobCreate))) -> FineTuningJob:
    return await run_in_threadpool(_jobs(request, tenant).create, body)


def list_jobs(request: Request, after: str | None = None, limit: int = 20,
              tenant: str = Depends(current_tenant)) -> JobList:
    return _jobs(request, tenant).list(after, limit)


def retrieve_job(request: Request, job_id: str, tenant: str = Depends(current_tenant)) -> FineTuningJob:
    return _jobs(request, tenant).retrieve(job_id)


def cancel_job(request: Request, job_id: str, tenant: str = Depends(current_tenant)) -> FineTuningJob:
    return _jobs(request, tenant).cancel(job_id)


def pause_job(request: Request, job_id: str, tenant: str = Depends(current_tenant)) -> FineTuningJob:
    return _jobs(request, tenant).pause(job_id)


def resume_job(request: Request, job_id: str, tenant: str = Depends(current_tenant)) -> FineTuningJob:
    return _jobs(request, tenant).resume(job_id)


async def list_events(request: Request, job_id: str, after: str | None = None, limit: int = 20, stream: bool = False,
                      tenant: str = Depends(current_tenant)) -> EventList:  # or, with stream=true, the SSE stream
    jobs = _jobs(request, tenant)
    job = await run_in_threadpool(jobs.job_row, job_id)
    if stream:
        return StreamingResponse(jobs.event_stream(request, job), media_type="text/event-stream", headers=SSE_HEADERS)
    return await run_in_threadpool(jobs.events, job_id, after, limit)


def list_checkpoints(request: Request, job_id: str, after: str | None = None, limit: int = 10,
                     tenant: str = Depends(current_tenant)) -> CheckpointList:
    return _jobs(request, tenant).checkpoints(job_id, after, limit)
