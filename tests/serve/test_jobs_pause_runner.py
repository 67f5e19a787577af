"""The job runner's side of pause / resume (serve/job_runner.py), without a worker: what a paused job's
ended worker makes of it, a job resumed before its paused worker has stopped, and a restart."""

from __future__ import annotations

import pytest

from tunelab.runs.rundir import RunDir
from tunelab.serve import jobs_db
from tunelab.serve.job_runner import INTERRUPTED, JobRunner, run_dir
from tunelab.serve.state import ServeState


class Ended:
    """A worker process that has exited with `returncode`."""

    def __init__(self, returncode: int):
        self.returncode, self.pid = returncode, 0

    def poll(self):
        return self.returncode


@pytest.fixture
def runner(tmp_path):
    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base="base")
    state.jobs_max_concurrent = 1
    return JobRunner(state)


def _job(runner, status: str, step: int | None = None, done: bool = False) -> dict:
    job_id = jobs_db.new_id("ftjob")
    row = {"id": job_id, "tenant": "default", "model": "m", "training_file": "file-x",
           "validation_file": None, "method": {"type": "supervised"}, "hyperparameters": {}, "suffix": None,
           "seed": 1, "metadata": None, "status": status, "run_name": f"ft-{job_id[-8:]}", "created_at": jobs_db.now()}
    jobs_db.insert_job(runner.db, row)
    run = RunDir(run_dir(runner.state, row))
    if step is not None:
        (run.checkpoint(step)).mkdir(parents=True)
        (run.checkpoint(step) / "state.json").write_text("{}")
    if done:
        run.path.mkdir(parents=True, exist_ok=True)
        run.done_path.write_text("")
    return jobs_db.job_by_id(runner.db, row["id"])


def _messages(runner, job) -> list[str]:
    return [r["message"] for r in jobs_db.events_since(runner.db, job["id"], 0)]


@pytest.mark.parametrize("rc", [INTERRUPTED, -2, 1])  # checkpointed, SIGINT in the imports, an error meanwhile
def test_a_paused_jobs_worker_that_stops_leaves_it_paused_at_its_checkpoint(runner, rc):
    job = _job(runner, "paused", step=6)
    runner.procs[job["id"]] = Ended(rc)
    runner.step()
    got = jobs_db.job_by_id(runner.db, job["id"])
    assert (got["status"], got["error"], got["worker_pid"]) == ("paused", None, None)
    assert _messages(runner, job)[-1] == "The job is paused; it resumes from its checkpoint at step 6"
    assert not runner.procs


def test_a_paused_job_whose_run_finished_succeeds(runner):
    job = _job(runner, "paused", step=6, done=True)
    runner.procs[job["id"]] = Ended(0)
    runner.step()
    got = jobs_db.job_by_id(runner.db, job["id"])
    assert (got["status"], got["fine_tuned_model"]) == ("succeeded", job["run_name"])


def test_a_job_resumed_before_its_worker_stopped_waits_for_it_then_starts(runner, monkeypatch):
    job = _job(runner, "queued", step=6)  # paused, then resumed at once
    launched = []
    def launch(j):  # what _launch records, without a worker
        launched.append(j["id"])
        return jobs_db.set_job(runner.db, j["id"], status="running")

    monkeypatch.setattr(runner, "_launch", launch)

    class Stopping(Ended):
        def poll(self):
            return None

    runner.procs[job["id"]] = Stopping(0)
    runner.step()
    assert launched == []  # never two workers on one run
    runner.procs[job["id"]] = Ended(INTERRUPTED)
    runner.step()
    assert launched == [job["id"]]


def test_a_restart_keeps_a_paused_job_paused_unless_its_run_is_done(runner):
    paused, finished = _job(runner, "paused", step=4), _job(runner, "paused", done=True)
    runner.recover()
    assert jobs_db.job_by_id(runner.db, paused["id"])["status"] == "paused"
    assert jobs_db.job_by_id(runner.db, finished["id"])["status"] == "succeeded"
