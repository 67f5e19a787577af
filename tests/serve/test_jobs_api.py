"""`/v1/fine_tuning/jobs` through the official `openai` client on a real server (uvicorn in a thread,
127.0.0.1, auth on, tenants alice and bob): a supervised job on the tiny Llama from upload to a chat
with its fine-tuned model, the SSE event stream, checkpoints, the one-at-a-time queue, cancel,
tenants, and every malformed request a 4xx in OpenAI's error shape that writes nothing."""

from __future__ import annotations

import json
import os
import time

import httpx2 as httpx
import openai
import pytest
import yaml

from tests.serve.conftest import uvicorn_thread

TRAIN = "examples/data/tunebot/train.jsonl"
VAL = "examples/data/tunebot/validation.jsonl"
PREF = "examples/data/preference/train.jsonl"


def _lines(path: str, n: int) -> bytes:
    return "".join(open(path).readlines()[:n]).encode()


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory, tiny_model_dir):
    """(state, port, keys, {tenant: openai client}, {tenant: file id of 16 chat examples})."""
    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("jobs")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), auth=True)
    # one thread: on 2 shared cores the tiny model's steps are several times faster than with two
    state.job_overrides = ["train.precision=fp32", "train.threads=1"]
    keys = {t: create_key(state.db_path, t)[1] for t in ("alice", "bob")}
    app = create_app(state, extra_modules=["tunelab.serve.files_api", "tunelab.serve.jobs_api"])
    with uvicorn_thread(app, stop_s=30) as port:
        clients = {t: openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=k, max_retries=0, timeout=60)
                   for t, k in keys.items()}
        files = {t: c.files.create(file=("train.jsonl", _lines(TRAIN, 16)), purpose="fine-tune").id
                 for t, c in clients.items()}
        yield state, port, keys, clients, files


def _wait(pred, what: str, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := pred()):
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stream(port: int, key: str, job_id: str, timeout: float = 120.0) -> list[dict]:
    """The job's SSE events up to `data: [DONE]` (bounded)."""
    out, deadline = [], time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v1/fine_tuning/jobs/{job_id}/events"
    with httpx.stream("GET", url, params={"stream": "true"}, headers={"Authorization": f"Bearer {key}"},
                      timeout=httpx.Timeout(30.0)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert time.monotonic() < deadline, "the event stream did not end"
            if line == "data: [DONE]":
                return out
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    raise AssertionError("the stream closed without [DONE]")


def test_supervised_job_end_to_end(jobs_server, tiny_model_dir):
    state, port, keys, clients, files = jobs_server
    alice = clients["alice"]
    val = alice.files.create(file=("val.jsonl", _lines(VAL, 2)), purpose="fine-tune").id
    job = alice.fine_tuning.jobs.create(
        model=str(tiny_model_dir), training_file=files["alice"], validation_file=val, suffix="bot", seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 2.0}, metadata={"team": "a"})
    assert (job.status, job.fine_tuned_model, job.seed, job.metadata) == ("validating_files", None, 7, {"team": "a"})
    assert job.hyperparameters.n_epochs == 2 and job.method.type == "supervised"
    events = _stream(port, keys["alice"], job.id)
    done = alice.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    name = f"ft-bot-{job.id[-8:]}"
    assert done.fine_tuned_model == name and done.finished_at and done.trained_tokens > 0
    run = state.tenant_runs("alice") / name
    assert (run / "DONE").exists() and (run / "adapter").is_dir()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["lr"] == pytest.approx(2 * 4e-4)  # default_lr("lora") x learning_rate_multiplier
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["seed"]) == (2, 8, 7)
    assert (cfg["train"]["precision"], cfg["train"]["threads"]) == ("fp32", 1) and cfg["data"]["validation"]
    # 16 examples / batch 8 = 2 steps an epoch x 2 epochs; an evaluation at each epoch end
    train = [e["data"] for e in events if e["type"] == "metrics" and "train_loss" in e["data"]]
    valid = [e["data"] for e in events if e["type"] == "metrics" and "valid_loss" in e["data"]]
    assert [d["step"] for d in train] == [1, 2, 3, 4] and all(d["train_loss"] > 0 for d in train)
    assert [d["step"] for d in valid] == [2, 4]
    messages = " | ".join(e["message"] for e in events)
    for text in ("Validating training file", "queued", "Fine-tuning job started", "Step 1: training loss=",
                 "Checkpoint created at step 2", f"successfully completed: new fine-tuned model {name}"):
        assert text in messages
    listed = alice.fine_tuning.jobs.list_events(job.id, limit=100)
    assert [e.id for e in listed.data] == [e["id"] for e in events][::-1]  # the same events, newest first
    page = alice.fine_tuning.jobs.list_events(job.id, limit=2)
    assert page.has_more and [e.id for e in page.data] == [e.id for e in listed.data[:2]]
    ckpts = alice.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in ckpts] == [2]  # the epoch-1 end (the last step is the run itself)
    assert ckpts[0].fine_tuned_model_checkpoint == f"{name}:step-2" and ckpts[0].metrics.train_loss > 0
    assert job.id in [j.id for j in alice.fine_tuning.jobs.list()]
    # the inference half serves the run from its DONE marker, without a restart
    assert name in [m.id for m in alice.models.list()]
    reply = alice.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          temperature=0)
    assert reply.model == name and reply.choices[0].message.content is not None


def _worker_pid(state, job_id: str) -> int | None:
    from tunelab.serve import jobs_db

    return jobs_db.job_by_id(jobs_db.conn(state.db_path), job_id)["worker_pid"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_job_at_a_time_and_cancel(jobs_server, tiny_model_dir):
    state, _, _, clients, files = jobs_server
    jobs = clients["bob"].fine_tuning.jobs
    long = jobs.create(model=str(tiny_model_dir), training_file=files["bob"], hyperparameters={"n_epochs": 100})
    nxt = jobs.create(model=str(tiny_model_dir), training_file=files["bob"])
    _wait(lambda: jobs.retrieve(long.id).status == "running", "the first job to run")
    time.sleep(1.0)
    assert jobs.retrieve(nxt.id).status == "queued"  # one job at a time
    assert jobs.cancel(nxt.id).status == "cancelled"  # a queued job: it never starts
    pid = _wait(lambda: _worker_pid(state, long.id), "the worker's pid")
    assert _alive(pid)
    cancelled = jobs.cancel(long.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    _wait(lambda: not _alive(pid), "the cancelled job's worker to be gone", timeout=15)
    time.sleep(1.0)  # the runner has reaped it: the status stays
    for j in (long, nxt):
        got = jobs.retrieve(j.id)
        assert (got.status, got.fine_tuned_model) == ("cancelled", None)
    assert not (state.tenant_runs("bob") / f"ft-{long.id[-8:]}" / "DONE").exists()
    assert "The job was cancelled" in [e.message for e in jobs.list_events(long.id).data]
    with pytest.raises(openai.ConflictError):
        jobs.cancel(long.id)
    runner = state.jobs_runner
    assert not runner.procs


def test_other_tenants_jobs_are_unknown(jobs_server, tiny_model_dir):
    state, _, _, clients, files = jobs_server
    alice, bob = clients["alice"].fine_tuning.jobs, clients["bob"].fine_tuning.jobs
    state.jobs_max_concurrent = 0  # pause the queue: alice's job only waits
    try:
        job = alice.create(model=str(tiny_model_dir), training_file=files["alice"])
        for call in (bob.retrieve, bob.cancel, bob.list_events, bob.checkpoints.list):
            with pytest.raises(openai.NotFoundError) as e:
                call(job.id)
            assert e.value.body["code"] == "job_not_found"
        assert job.id not in [j.id for j in bob.list()]
        with pytest.raises(openai.NotFoundError) as e:
            bob.create(model=str(tiny_model_dir), training_file=files["alice"])
        assert e.value.body["param"] == "training_file"
        with pytest.raises(openai.NotFoundError):
            bob.create(model=str(tiny_model_dir), training_file=files["bob"], validation_file=files["alice"])
        with pytest.raises(openai.NotFoundError):
            bob.list(after=job.id)
        assert alice.retrieve(job.id).status in ("validating_files", "queued")  # untouched
        assert alice.cancel(job.id).status == "cancelled"
    finally:
        state.jobs_max_concurrent = 1


def test_malformed_jobs_are_refused_and_write_nothing(jobs_server, tiny_model_dir):
    state, port, keys, clients, files = jobs_server
    from tunelab.serve import jobs_db

    alice = clients["alice"]
    bad = alice.files.create(file=("bad.jsonl", b'{"messages": []}\n'), purpose="fine-tune").id
    pairs = alice.files.create(file=("pairs.jsonl", _lines(PREF, 4)), purpose="fine-tune").id
    c = jobs_db.conn(state.db_path)
    count = lambda: c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]  # noqa: E731
    before, runs_before = count(), sorted(p.name for p in state.tenant_runs("alice").glob("*"))
    model, train = str(tiny_model_dir), files["alice"]
    cases = [
        (dict(model="no-such-model"), 404, "model"),
        (dict(model=str(tiny_model_dir.parent)), 404, "model"),  # a folder that is no model
        (dict(training_file="file-0000"), 404, "training_file"),
        (dict(training_file=bad), 400, "training_file"),  # status error
        (dict(training_file=pairs), 400, "training_file"),  # supervised on preference pairs
        (dict(method={"type": "dpo"}), 400, "training_file"),  # dpo on chat examples
        (dict(training_file=pairs, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}), 400,
         "hyperparameters.beta"),
        (dict(method={"type": "reinforcement"}), 400, "method.reinforcement.grader"),
        (dict(method={"type": "rlhf"}), 400, "method.type"),
        (dict(suffix="../x"), 400, "suffix"),
        (dict(suffix="a" * 41), 400, "suffix"),
        (dict(hyperparameters={"n_epochs": 0}), 400, "hyperparameters.n_epochs"),
        (dict(hyperparameters={"n_epochs": "many"}), 400, "hyperparameters.n_epochs"),
        (dict(hyperparameters={"n_epochs": True}), 400, "hyperparameters.n_epochs"),
        (dict(hyperparameters={"batch_size": 2.5}), 400, "hyperparameters.batch_size"),
        (dict(hyperparameters={"learning_rate_multiplier": -1}), 400, "hyperparameters.learning_rate_multiplier"),
        (dict(hyperparameters={"lr": 1e-3}), 400, "hyperparameters.lr"),
        (dict(hyperparameters={"beta": 0.2}), 400, "hyperparameters.beta"),  # beta is for dpo
        (dict(hyperparameters={"finetuning_type": "freeze"}), 400, "hyperparameters.finetuning_type"),
        (dict(hyperparameters={"finetuning_type": 1}), 400, "hyperparameters.finetuning_type"),
        (dict(seed=-1), 400, "seed"),
        (dict(metadata={"k": 1}), 400, "metadata"),
        (dict(extra_body={"n_gpus": 8}), 400, "n_gpus"),
    ]
    for kw, status, param in cases:
        args = {"model": model, "training_file": train, **kw}
        with pytest.raises(openai.APIStatusError) as e:
            alice.fine_tuning.jobs.create(**args)
        assert (e.value.status_code, e.value.body["param"]) == (status, param), kw
        assert e.value.body["type"] == "invalid_request_error" and e.value.body["message"]
    url, auth = f"http://127.0.0.1:{port}/v1/fine_tuning/jobs", {"Authorization": f"Bearer {keys['alice']}"}
    for body in (b"{not json", b"[1, 2]", b'{"training_file": "%s"}' % train.encode()):
        r = httpx.post(url, content=body, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    for path in ("/file-none", "/ftjob-none", "/ftjob-none/events", "/ftjob-none/checkpoints"):
        assert httpx.get(url + path, headers=auth).status_code == 404
    assert count() == before
    assert sorted(p.name for p in state.tenant_runs("alice").glob("*")) == runs_before


def test_dpo_job_is_checked_and_queued(jobs_server, tiny_model_dir):
    """A dpo job on preference pairs passes the checks with its hyperparameters resolved ("auto":
    tunelab's defaults); the queue is paused, so nothing runs."""
    state, _, _, clients, _ = jobs_server
    alice = clients["alice"]
    pairs = alice.files.create(file=("pairs.jsonl", _lines(PREF, 4)), purpose="fine-tune").id
    state.jobs_max_concurrent = 0
    try:
        job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=pairs, method={
            "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": "auto"}}})
        assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
        assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (3, 8)
        assert job.hyperparameters.learning_rate_multiplier == 1.0
        assert alice.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    finally:
        state.jobs_max_concurrent = 1


def test_a_second_server_on_the_same_home_runs_no_jobs(jobs_server):
    from tunelab.serve.job_runner import JobRunner

    state = jobs_server[0]
    other = JobRunner(state)
    other.start()  # the first server holds home/jobs.lock
    assert other.thread is None


@pytest.mark.slow
def test_dpo_job_end_to_end(jobs_server, tiny_model_dir):
    """OpenAI's DPO lines -> a dpo run through TRL (slow: importing TRL alone takes ~15 s on 2 cores)."""
    state, port, keys, clients, _ = jobs_server
    alice = clients["alice"]
    line = json.dumps({"input": {"messages": [{"role": "user", "content": "hi"}]},
                       "preferred_output": [{"role": "assistant", "content": "Hello there!"}],
                       "non_preferred_output": [{"role": "assistant", "content": "go away"}]}) + "\n"
    f = alice.files.create(file=("dpo.jsonl", line.encode() * 4), purpose="fine-tune").id
    job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=f, method={
        "type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}})
    events = _stream(port, keys["alice"], job.id, timeout=240)
    done = alice.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert [e["data"]["step"] for e in events if e["type"] == "metrics" and "train_loss" in e["data"]] == [1, 2]
    cfg = yaml.safe_load((state.tenant_runs("alice") / done.fine_tuned_model / "config.yaml").read_text())
    assert cfg["task"] == "dpo" and cfg["preference"]["beta"] == 0.1 and cfg["train"]["resume"] == "auto"


def test_finetuning_type_sets_the_runs_method_and_a_server_override_still_wins(tmp_path):
    from tunelab.config import default_lr
    from tunelab.serve.job_runner import job_config
    from tunelab.serve.jobs_api import hyperparameters

    assert hyperparameters({}, "supervised")["finetuning_type"] == "lora"
    hp = hyperparameters({"finetuning_type": "qlora"}, "supervised")
    job = {"hyperparameters": hp, "method": {"type": "supervised"}, "model": "m", "seed": 1, "run_name": "ft-x"}
    train = tmp_path / "t.jsonl"
    cfg = job_config(job, train, None, tmp_path / "runs", [])
    assert cfg["method"]["name"] == "qlora"
    assert cfg["train"]["lr"] == pytest.approx(default_lr("qlora"))
    assert job_config(job, train, None, tmp_path / "runs", ["method.name=full"])["method"]["name"] == "full"
    old = {**job, "hyperparameters": {k: v for k, v in hp.items() if k != "finetuning_type"}}  # a job made before
    assert job_config(old, train, None, tmp_path / "runs", [])["method"]["name"] == "lora"
