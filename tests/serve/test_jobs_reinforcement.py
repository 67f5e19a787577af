"""OpenAI's `reinforcement` method on `/v1/fine_tuning/jobs`, pause / resume, and `DELETE /v1/models`,
through the official `openai` client on a real server (uvicorn in a thread, 127.0.0.1, auth on,
tenants alice and bob): an RFT prompts file and a string_check grader train task grpo on the tiny
Llama; the job is paused at a checkpoint and resumed from it, succeeds, its model chats and is
deleted; every malformed request is a 400 naming the field and writes nothing."""

from __future__ import annotations

import json

import openai
import pytest
import yaml

from tests.serve.conftest import uvicorn_thread
from tests.serve.test_jobs_api import _wait as wait_for

# OpenAI's RFT lines: messages ending with a user turn, and any other field for the grader (item.*)
PROMPTS = [{"messages": [{"role": "user", "content": q}], "answer": a}
           for q, a in (("Say yes.", "yes"), ("Say no.", "no"), ("Name a colour.", "red"), ("Count to two.", "1 2"))]
# "ne" against item.answer: 1 for every completion that is not the answer, so each step's reward is 1.0 exactly
# when the template is filled from the row (a grader reading nothing, or the wrong field, scores otherwise)
GRADER = {"type": "string_check", "name": "not_answer", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "ne"}


def prompts_file(rows=PROMPTS) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def reinforcement(**hyperparameters) -> dict:
    return {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": hyperparameters}}


@pytest.fixture(scope="module")
def rft_server(tmp_path_factory, tiny_model_dir):
    """(state, {tenant: openai client}, {tenant: file id of the 4 prompts})."""
    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("rft")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), auth=True)
    # one thread, fp32, 4 new tokens a completion: a GRPO step of the tiny model takes ~0.1 s
    state.job_overrides = ["train.precision=fp32", "train.threads=1", "grpo.max_completion_length=4"]
    state.rate_per_minute = 10**6  # the test polls the job closely
    keys = {t: create_key(state.db_path, t)[1] for t in ("alice", "bob")}
    app = create_app(state, extra_modules=["tunelab.serve.files_api", "tunelab.serve.jobs_api"])
    with uvicorn_thread(app, stop_s=30) as port:
        clients = {t: openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=k, max_retries=0, timeout=60)
                   for t, k in keys.items()}
        files = {t: c.files.create(file=("rft.jsonl", prompts_file()), purpose="fine-tune").id
                 for t, c in clients.items()}
        yield state, clients, files


def _wait(pred, what: str, timeout: float = 90.0, every: float = 0.05):
    return wait_for(pred, what, timeout, every)  # polled closely: a pause must land between two steps


def test_reinforcement_job_pauses_at_a_checkpoint_resumes_succeeds_and_its_model_is_deleted(rft_server,
                                                                                          tiny_model_dir):
    from tunelab.runs.rundir import RunDir

    state, clients, files = rft_server
    alice, bob = clients["alice"], clients["bob"]
    assert alice.files.retrieve(files["alice"]).status == "processed"
    # 4 prompts / batch 1 = 4 steps an epoch x 4 epochs = 16 steps; checkpoints at each epoch end (4, 8, 12)
    # the training prompts as validation file too: a greedy held-out pass before training, at steps 8 and 16
    job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=files["alice"], suffix="rl", seed=3,
                                        validation_file=files["alice"],
                                        method=reinforcement(n_epochs=4, batch_size=1, compute_multiplier=0.5,
                                                             learning_rate_multiplier=2.0, eval_interval=8))
    rl = job.method.reinforcement
    assert job.method.type == "reinforcement" and rl.grader.type == "string_check" and rl.grader.operation == "ne"
    assert (rl.hyperparameters.n_epochs, rl.hyperparameters.batch_size, rl.hyperparameters.compute_multiplier) == \
        (4, 1, 0.5)
    assert (rl.hyperparameters.eval_interval, rl.hyperparameters.eval_samples, rl.hyperparameters.reasoning_effort) \
        == (8, "auto", "default")
    jobs = alice.fine_tuning.jobs
    _wait(lambda: jobs.checkpoints.list(job.id).data, "the first checkpoint", every=0.02)
    paused = jobs.pause(job.id)
    assert paused.status == "paused"
    run = state.tenant_runs("alice") / f"ft-rl-{job.id[-8:]}"
    stopped = _wait(lambda: [e.message for e in jobs.list_events(job.id, limit=100).data
                             if e.message.startswith("The job is paused; it resumes from its checkpoint at step ")],
                    "the worker to stop at a checkpoint", timeout=30)
    at = int(stopped[0].rsplit(" ", 1)[1])
    assert 4 <= at < 16 and RunDir(run).checkpoint(at).is_dir() and not RunDir(run).done
    assert not state.jobs_runner.procs and jobs.retrieve(job.id).status == "paused"
    with pytest.raises(openai.BadRequestError) as e:  # OpenAI's rules: only a running job pauses
        jobs.pause(job.id)
    assert (e.value.body["code"], e.value.body["type"]) == ("job_not_pausable", "invalid_request_error")
    with pytest.raises(openai.NotFoundError):  # another tenant's job is unknown
        bob.fine_tuning.jobs.resume(job.id)
    assert jobs.resume(job.id).status == "queued"
    done = _wait(lambda: (j := jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled") and j,
                 "the resumed job to end")
    assert done.status == "succeeded", (done.error, (state.home / "jobs" / job.id / "worker.log").read_text())
    with pytest.raises(openai.BadRequestError) as e:  # only a paused job resumes
        jobs.resume(job.id)
    assert e.value.body["code"] == "job_not_resumable"

    events = jobs.list_events(job.id, limit=1000).data[::-1]
    train = [e.data for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert [d["step"] for d in train] == list(range(1, 17))  # every step once: none lost, none run twice
    assert all(d["reward"] == 1.0 and d["rewards_not_answer_mean"] == 1.0 for d in train)
    heldout = [e.data for e in events if e.type == "metrics" and "heldout_reward" in e.data]
    assert [d["step"] for d in heldout] == [0, 8, 16]  # once each, across the pause
    assert all(d["heldout_reward"] == 1.0 and d["heldout_n"] == len(PROMPTS) for d in heldout)
    assert any(e.message == "Step 16: held-out reward=1.0000" for e in events)
    messages = [e.message for e in events]
    assert f"Training resumes from the checkpoint at step {at}" in messages
    assert f"The job was resumed: it is queued and resumes from its checkpoint at step {at}" in messages
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "grpo" and cfg["train"]["epochs"] == 4 and cfg["train"]["lr"] == pytest.approx(2 * 4e-4)
    assert (cfg["grpo"]["num_generations"], cfg["grpo"]["prompts_per_step"]) == (2, 1)  # max(2, round(4 x 0.5))
    assert cfg["grpo"]["rewards"][0]["grader"] == GRADER and cfg["train"]["eval_every"] == 8

    name = done.fine_tuned_model
    assert name == run.name and name in [m.id for m in alice.models.list()]
    reply = alice.chat.completions.create(model=name, messages=[{"role": "user", "content": "Say yes."}],
                                          max_tokens=4, temperature=0)
    assert reply.model == name and reply.choices[0].message.content is not None

    # DELETE /v1/models/{model}: another tenant's is unknown, the base is not anyone's to delete
    with pytest.raises(openai.NotFoundError) as e:
        bob.models.delete(name)
    assert e.value.body["code"] == "model_not_found" and run.is_dir()
    with pytest.raises(openai.PermissionDeniedError) as e:
        alice.models.delete(str(tiny_model_dir))
    assert e.value.body["type"] == "permission_error"
    gone = alice.models.delete(name)
    assert (gone.id, gone.object, gone.deleted) == (name, "model", True)
    assert not run.exists() and not list(run.parent.glob(".deleted-*"))
    assert name not in [m.id for m in alice.models.list()]
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        alice.models.delete(name)
    assert not [k for k in state.pool.loaded if k.startswith(str(run.resolve()) + "@")]  # off the engine too


def test_malformed_reinforcement_jobs_are_400s_naming_the_field(rft_server, tiny_model_dir):
    from tunelab.serve import jobs_db

    state, clients, files = rft_server
    alice = clients["alice"]
    chats = alice.files.create(file=("chat.jsonl", open("examples/data/tunebot/train.jsonl", "rb").read()),
                               purpose="fine-tune").id
    ragged = alice.files.create(file=("r.jsonl", prompts_file(PROMPTS[:1] + [{"messages": PROMPTS[1]["messages"]}])),
                                purpose="fine-tune")
    assert ragged.status == "error" and "differ from the first line's" in ragged.status_details
    count = lambda: jobs_db.conn(state.db_path).execute("SELECT COUNT(*) FROM jobs").fetchone()[0]  # noqa: E731
    before = count()
    rl = lambda **sub: {"type": "reinforcement", "reinforcement": sub}  # noqa: E731
    cases = [  # (request, the param of the 400, a word its message names)
        (dict(method=rl()), "method.reinforcement.grader", "grader"),  # the grader is required
        (dict(method=rl(grader=GRADER, epochs=2)), "method.reinforcement.epochs", "epochs"),
        (dict(method=reinforcement(eval_interval=0)), "hyperparameters.eval_interval", "eval_interval"),
        (dict(method=reinforcement(eval_samples=4)), "hyperparameters.eval_samples", "greedy"),
        (dict(method=reinforcement(reasoning_effort="high")), "hyperparameters.reasoning_effort", "reasoning"),
        (dict(method=reinforcement(beta=0.1)), "hyperparameters.beta", "beta"),  # dpo's
        (dict(method=reinforcement(finetuning_type="full")), "hyperparameters.finetuning_type", "lora or qlora"),
        (dict(method=reinforcement(compute_multiplier=0)), "hyperparameters.compute_multiplier", "compute_multiplier"),
        (dict(method=rl(grader={**GRADER, "pass_threshold": 1})), "method.reinforcement.grader", "pass_threshold"),
        (dict(method=rl(grader={**GRADER, "operation": "startswith"})), "method.reinforcement.grader.operation",
         "startswith"),
        (dict(method=rl(grader={**GRADER, "type": "label_model"})), "method.reinforcement.grader.type", "label_model"),
        (dict(method=rl(grader="string_check")), "method.reinforcement.grader", "grader"),
        (dict(method={"type": "supervised", "supervised": {"hyperparameters": {"compute_multiplier": 2}}}),
         "hyperparameters.compute_multiplier", "compute_multiplier"),  # reinforcement's only
        (dict(method=reinforcement(), validation_file=chats), "validation_file", "prompts"),  # chat examples
        (dict(method=reinforcement(), training_file=chats), "training_file", "prompts"),  # chat examples
        (dict(training_file=files["alice"]), "training_file", "chat examples"),  # prompts for a supervised job
        (dict(method=reinforcement(), training_file=ragged.id), "training_file", "differ"),  # status error
    ]
    for kw, param, word in cases:
        args = {"model": str(tiny_model_dir), "training_file": files["alice"], **kw}
        with pytest.raises(openai.BadRequestError) as e:
            alice.fine_tuning.jobs.create(**args)
        body = e.value.body
        assert (body["param"], body["type"], word in body["message"]) == (param, "invalid_request_error", True), \
            (kw, body)
    assert count() == before
