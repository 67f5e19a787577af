"""The job worker's record of checkpoints (serve/job_worker.Monitor): every checkpoint a run writes is
listed, however soon the recipe deletes it (pruned while training, or the whole folder after DONE,
train.keep_checkpoints: none), and the last step's (position.final, the run itself) is not."""

from __future__ import annotations

import json

import pytest

from tunelab.runs.rundir import RunDir
from tunelab.serve import jobs_db
from tunelab.train import state as train_state


def _checkpoint(run: RunDir, step: int, final: bool = False) -> None:
    """A complete checkpoint folder as train/state writes one: step-N.tmp with state.json, renamed."""
    tmp = run.checkpoints_dir / f"{run.checkpoint(step).name}.tmp"
    tmp.mkdir(parents=True)
    position = {"step": step, "epoch": 1, "final": True} if final else {"step": step, "epoch": 1}
    train_state.adopt_trainer_checkpoint(tmp, run.checkpoint(step), position, keep=2)


@pytest.fixture
def job(tmp_path):
    db = tmp_path / "serve.db"
    row = {"id": jobs_db.new_id("ftjob"), "tenant": "default", "model": "m", "training_file": "file-x",
           "validation_file": None, "method": {"type": "dpo"}, "hyperparameters": {}, "suffix": None, "seed": 1,
           "metadata": None, "status": "running", "run_name": "ft-x", "created_at": jobs_db.now()}
    jobs_db.insert_job(jobs_db.conn(db), row)
    return db, jobs_db.job_by_id(jobs_db.conn(db), row["id"])


def test_checkpoints_pruned_before_any_sweep_are_still_listed(tmp_path, job):
    from tunelab.serve.job_worker import Monitor

    db, row = job
    run = RunDir(tmp_path / "runs" / "ft-x")
    run.path.mkdir(parents=True)
    run.metrics_path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 9)))
    monitor = Monitor(str(db), row, run.path, interval=3600)  # its thread would never sweep in time
    train_state.BEFORE_PRUNE.append(monitor.before_prune)
    try:
        for step in (2, 4, 6):
            _checkpoint(run, step)  # keep=2: step-2 is pruned when step-6 is written
        _checkpoint(run, 8, final=True)
        assert train_state.list_checkpoints(run.checkpoints_dir) == [6, 8]
        train_state.prune_finished(run.checkpoints_dir, "none")  # DONE: the folder goes
    finally:
        train_state.BEFORE_PRUNE.remove(monitor.before_prune)
    assert not run.checkpoints_dir.exists()
    c = jobs_db.conn(db)
    rows, _ = jobs_db.page(c, "checkpoints", "job_id = ? AND tenant = ?", (row["id"], "default"), None, 100,
                           newest_first=False, kind="checkpoint")  # what the route lists
    listed = [jobs_db.checkpoint_object(r) for r in rows]
    assert [x["step_number"] for x in listed] == [2, 4, 6]  # not 8: the last step's is the run itself
    assert [x["fine_tuned_model_checkpoint"] for x in listed] == ["ft-x:step-2", "ft-x:step-4", "ft-x:step-6"]
    assert listed[0]["metrics"]["train_loss"] == pytest.approx(0.5)
    events = [r["message"] for r in c.execute("SELECT message FROM events WHERE job_id = ?", (row["id"],))]
    assert [m for m in events if m.startswith("Checkpoint created")] == [
        "Checkpoint created at step 2", "Checkpoint created at step 4", "Checkpoint created at step 6"]
    assert sum(m.startswith("Step ") for m in events) == 8  # each step's metrics event once
