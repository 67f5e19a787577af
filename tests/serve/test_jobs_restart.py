"""A server SIGKILLed mid-job, then started again: the job resumes from its last checkpoint and
finishes with the same number of steps, each step reported once; nothing half-written survives.

The server is `python -m tunelab serve --no-auth` in its own process group (127.0.0.1, a free
port); the kill is SIGKILL to that group, which holds the job's worker too."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import openai

TRAIN = "examples/data/tunebot/train.jsonl"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, what: str, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(openai.APIConnectionError):
            if (got := pred()):
                return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not reaped yet) is gone for our purpose
    with contextlib.suppress(OSError):
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"
    return True


@contextlib.contextmanager
def _server(tmp, model_dir, log_name: str):
    """(process, openai client) of `tunelab serve` on tmp/home + tmp/runs; SIGKILLed (group) at the end."""
    port = _port()
    # one thread (server and worker): on 2 shared cores the tiny model is several times faster so
    env = {**os.environ, "TUNELAB_SERVE_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(tmp / log_name, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", "--no-auth", "--port", str(port),
                             "--base", str(model_dir), "--runs", str(tmp / "runs"), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=30)
    try:
        def up():
            assert proc.poll() is None, (tmp / log_name).read_text()
            return client.models.list() is not None

        _wait(up, "the server to answer", timeout=90)
        yield proc, client
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
        log.close()


def kill_after_first_checkpoint(tmp, proc, client, job, timeout: float, every: float):
    """SIGKILL the server's process group (its job's worker too) once the job lists its first checkpoint;
    the run must be unfinished and the job's row still `running`. Returns the run folder."""
    from tunelab.serve import jobs_db

    db = tmp / "home" / "serve.db"
    run = tmp / "runs" / f"ft-{job.id[-8:]}"
    _wait(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "the first checkpoint", timeout=timeout,
          every=every)
    worker = jobs_db.job_by_id(jobs_db.conn(db), job.id)["worker_pid"]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(15)
    _wait(lambda: not _alive(worker), "the worker to die with its server", timeout=15)
    assert not (run / "DONE").exists(), "the job ended before the kill: nothing was tested"
    assert jobs_db.job_by_id(jobs_db.conn(db), job.id)["status"] == "running"
    return run


def finished_once_after_restart(tmp, client, job, run, steps: int, checkpoints, timeout: float):
    """The job on the restarted server: succeeded, resumed once from one of `checkpoints`, steps 1..`steps`
    each reported once (events and the run's own metrics), its model listed. Returns (job, the steps' data)."""
    from tunelab.runs.rundir import RunDir
    from tunelab.serve import jobs_db

    done = _wait(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in jobs_db.TERMINAL and j,
                 "the job to end after the restart", timeout=timeout)
    worker_log = tmp / "home" / "jobs" / job.id / "worker.log"
    assert done.status == "succeeded", (done.error, worker_log.read_text())
    assert done.fine_tuned_model == run.name and (run / "DONE").exists()
    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data[::-1]
    train = [e.data for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert [d["step"] for d in train] == list(range(1, steps + 1))  # every step once: none lost, none run twice
    messages = [e.message for e in events]
    resumed = [m for m in messages if m.startswith("Training resumes from the checkpoint at step ")]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) in checkpoints
    assert any(m.startswith("The server restarted: the job is queued and resumes") for m in messages)
    assert sum(m.startswith("The job has successfully completed") for m in messages) == 1
    # the run's own log: the resumed run dropped and redid the rows after its checkpoint
    assert [r["step"] for r in RunDir(run).metrics() if "loss" in r] == list(range(1, steps + 1))
    assert run.name in [m.id for m in client.models.list()]
    return done, train


def test_sigkill_mid_job_then_restart_resumes_and_finishes(tmp_path, tiny_model_dir):
    from tunelab.serve import jobs_db

    with _server(tmp_path, tiny_model_dir, "server1.log") as (proc, client):
        f = client.files.create(file=("train.jsonl", "".join(open(TRAIN).readlines()[:16]).encode()),
                                purpose="fine-tune")
        # 16 examples / batch 1 = 16 steps an epoch x 5 epochs = 80 steps; checkpoints at 16, 32, 48, 64:
        # after the first one, 64 steps and the saving are left for the kill to land in
        job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=f.id,
                                             hyperparameters={"n_epochs": 5, "batch_size": 1})
        run = kill_after_first_checkpoint(tmp_path, proc, client, job, timeout=120, every=0.1)
        (tmp_path / "home" / "files" / f".tmp-{jobs_db.new_id('file')}.jsonl").write_bytes(b'{"mess')  # a cut upload

    with _server(tmp_path, tiny_model_dir, "server2.log") as (proc, client):
        finished_once_after_restart(tmp_path, client, job, run, 80, (16, 32, 48, 64), timeout=150)
        assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]
        assert not list((tmp_path / "home" / "files").glob(".tmp-*"))  # the cut upload was swept
        assert sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data) == [16, 32, 48, 64]


PREF = "examples/data/preference/train.jsonl"


def test_sigkill_mid_dpo_job_then_restart_resumes_and_finishes(tmp_path, tiny_model_dir):
    """The same for a dpo job (TRL's DPOTrainer): its epoch-end saves are the run's checkpoints, and
    the restarted worker continues from the last one with the Trainer's resume_from_checkpoint."""
    from tunelab.runs.rundir import RunDir

    with _server(tmp_path, tiny_model_dir, "server1.log") as (proc, client):
        f = client.files.create(file=("pairs.jsonl", "".join(open(PREF).readlines()[:16]).encode()),
                                purpose="fine-tune")
        # 16 pairs / batch 2 = 8 steps an epoch x 5 epochs = 40 steps; checkpoints at 8, 16, 24, 32 (and
        # the last step's, the run itself): after the first one, 32 steps are left for the kill to land in
        job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=f.id, method={
            "type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 5, "batch_size": 2}}})
        run = kill_after_first_checkpoint(tmp_path, proc, client, job, timeout=180, every=0.1)
        assert RunDir(run).checkpoint(8).is_dir()

    with _server(tmp_path, tiny_model_dir, "server2.log") as (proc, client):
        _, train = finished_once_after_restart(tmp_path, client, job, run, 40, (8, 16, 24, 32), timeout=240)
        assert all("rewards_margins" in d for d in train)
        # each epoch end's checkpoint but the last step's (the run itself), listed after the job's end
        # although the finished run keeps none on disk (train.keep_checkpoints: none)
        assert sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data) == [8, 16, 24, 32]
        assert not RunDir(run).checkpoints_dir.exists()
