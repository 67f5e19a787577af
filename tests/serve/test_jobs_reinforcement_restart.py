"""A reinforcement job (task grpo, a string_check grader) when its server is SIGKILLed mid-run and started
again: it resumes from its last checkpoint and finishes with every step once, as supervised jobs do
(tests/serve/test_jobs_restart.py: the same servers, `python -m tunelab serve --no-auth` in their own
process group, and the same kill)."""

from __future__ import annotations

from tests.serve.test_jobs_reinforcement import GRADER, prompts_file
from tests.serve.test_jobs_restart import _server, finished_once_after_restart, kill_after_first_checkpoint


def test_sigkill_mid_reinforcement_job_then_restart_resumes_and_finishes(tmp_path, tiny_model_dir):
    with _server(tmp_path, tiny_model_dir, "server1.log") as (proc, client):
        f = client.files.create(file=("rft.jsonl", prompts_file()), purpose="fine-tune")
        # 4 prompts / batch 1 = 4 steps an epoch x 4 epochs = 16 steps; checkpoints at 4, 8, 12: after the
        # first one, 12 steps and the saving are left for the kill to land in
        job = client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=f.id, method={
            "type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
                "n_epochs": 4, "batch_size": 1, "compute_multiplier": 0.5}}})
        run = kill_after_first_checkpoint(tmp_path, proc, client, job, timeout=120, every=0.05)

    with _server(tmp_path, tiny_model_dir, "server2.log") as (proc, client):
        done, train = finished_once_after_restart(tmp_path, client, job, run, 16, (4, 8, 12), timeout=150)
        assert done.method.type == "reinforcement" and done.method.reinforcement.grader.name == GRADER["name"]
        assert all(d["rewards_not_answer_mean"] == 1.0 for d in train)  # the grader scored every step
        reply = client.chat.completions.create(model=run.name, messages=[{"role": "user", "content": "Say yes."}],
                                               max_tokens=4, temperature=0)
        assert reply.model == run.name
