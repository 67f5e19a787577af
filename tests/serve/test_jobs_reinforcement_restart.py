"""A reinforcement job (task grpo, a string_check grader) when its server is SIGKILLed mid-run and started
again: it resumes from its last checkpoint and finishes with every step once, as supervised jobs do
(tests/serve/test_jobs_restart.py: the same servers, `python -m tunelab serve --no-auth` in their own
process group, and the same kill)."""

from __future__ import annotations

import os
import signal

from tests.serve.test_jobs_reinforcement import GRADER, prompts_file
from tests.serve.test_jobs_restart import _alive, _server, _wait


def test_sigkill_mid_reinforcement_job_then_restart_resumes_and_finishes(tmp_path, tiny_model_dir):
    from tunelab.runs.rundir import RunDir
    from tunelab.serve import jobs_db

    db = tmp_path / "home" / "serve.db"
    with _server(tmp_path, tiny_model_dir, "server1.log") as (proc, client):
        f = client.files.create(file=("rft.jsonl", prompts_file()), purpose="fine-tune")
        # 4 prompts / batch 1 = 4 steps an epoch x 4 epochs = 16 steps; checkpoints at 4, 8, 12: after the
        # first one, 12 steps and the saving are left for the kill to land in
        job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=f.id, method={
            "type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
                "n_epochs": 4, "batch_size": 1, "compute_multiplier": 0.5}}})
        run = tmp_path / "runs" / f"ft-{job.id[-8:]}"
        _wait(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "the first checkpoint", timeout=120,
              every=0.05)
        worker = jobs_db.job_by_id(jobs_db.conn(db), job.id)["worker_pid"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
        _wait(lambda: not _alive(worker), "the worker to die with its server", timeout=15)
        assert not (run / "DONE").exists(), "the job ended before the kill: nothing was tested"
        assert jobs_db.job_by_id(jobs_db.conn(db), job.id)["status"] == "running"

    with _server(tmp_path, tiny_model_dir, "server2.log") as (proc, client):
        done = _wait(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in jobs_db.TERMINAL and j,
                     "the job to end after the restart", timeout=150)
        worker_log = tmp_path / "home" / "jobs" / job.id / "worker.log"
        assert done.status == "succeeded", (done.error, worker_log.read_text())
        assert done.fine_tuned_model == run.name and (run / "DONE").exists()
        assert done.method.type == "reinforcement" and done.method.reinforcement.grader.name == GRADER["name"]
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data[::-1]
        train = [e.data for e in events if e.type == "metrics" and "train_loss" in e.data]
        assert [d["step"] for d in train] == list(range(1, 17))  # every step once: none lost, none run twice
        assert all(d["rewards_not_answer_mean"] == 1.0 for d in train)  # the grader scored every step
        messages = [e.message for e in events]
        resumed = [m for m in messages if m.startswith("Training resumes from the checkpoint at step ")]
        assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) in (4, 8, 12)
        assert any(m.startswith("The server restarted: the job is queued and resumes") for m in messages)
        assert sum(m.startswith("The job has successfully completed") for m in messages) == 1
        assert [r["step"] for r in RunDir(run).metrics() if "loss" in r] == list(range(1, 17))
        assert run.name in [m.id for m in client.models.list()]
        reply = client.chat.completions.create(model=run.name, messages=[{"role": "user", "content": "Say yes."}],
                                               max_tokens=4, temperature=0)
        assert reply.model == run.name
