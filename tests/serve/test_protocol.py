"""The serve protocol layer (serve/protocol/): the request models take what the official `openai`
client sends, the response models round-trip through the client's own types, the jobs request keeps
its refusal messages, a validation failure is a 400 in OpenAI's shape on a real server, the route
registry (serve/routes.py) is every mounted route, and the app state is typed (no `state.extra`)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai.types import CompletionCreateParams, EmbeddingCreateParams
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from openai.types.fine_tuning import JobCreateParams

from tests.serve.conftest import start_server
from tunelab.serve.errors import APIError
from tunelab.serve.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCreate,
    JobCheckpoint,
    JobEvent,
    Model,
)

JOB_ROW = {"id": "ftjob-abc", "tenant": "alice", "model": "smollm2-135m-instruct", "training_file": "file-1",
           "validation_file": None, "method": {"type": "dpo"}, "suffix": "bot", "seed": 7, "metadata": {"k": "v"},
           "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0, "beta": 0.1,
                               "finetuning_type": "lora"},
           "status": "failed", "created_at": 1, "finished_at": 2, "fine_tuned_model": None, "trained_tokens": None,
           "error": {"code": "training_failed", "message": "boom", "param": None}}


def test_requests_take_the_sdks_payloads():
    chat: CompletionCreateParamsNonStreaming = {
        "model": "m", "messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_completion_tokens": 8, "temperature": 0, "stop": ["\n"], "seed": 3,
        "stream_options": {"include_usage": True}, "user": "u", "logit_bias": {}}
    req = ChatRequest.model_validate(chat)
    assert req.check(2048, req.max_tokens_param()) == 8 and req.stops() == ["\n"] and req.include_usage()
    assert req.conversation() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with pytest.raises(APIError, match="unsupported parameter 'functions'"):  # the legacy name; tools are served
        ChatRequest.model_validate({**chat, "functions": []}).check(2048)
    comp: CompletionCreateParams = {"model": "m", "prompt": [[1, 2, 3]], "max_tokens": 4, "stream": True}
    assert CompletionRequest.model_validate(comp).prompts() == [1, 2, 3]
    emb: EmbeddingCreateParams = {"model": "minilm-l6", "input": ["a", "b"], "encoding_format": "base64"}
    assert EmbeddingRequest.model_validate(emb).texts() == ["a", "b"]
    job: JobCreateParams = {"model": "m", "training_file": "file-1", "suffix": "bot", "seed": 1,
                            "hyperparameters": {"n_epochs": 2, "batch_size": "auto"},
                            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 4}}}}
    req = FineTuningJobCreate.model_validate(job)
    hp = req.resolved_hyperparameters()  # the method's own win over the top-level ones; auto resolved
    assert (hp["n_epochs"], hp["batch_size"], hp["beta"], hp["finetuning_type"]) == (4, 8, 0.25, "lora")
    assert FineTuningJobCreate.model_validate({"model": "m", "training_file": "f"}).method.type == "supervised"


@pytest.mark.parametrize("body, message, param", [
    ([1, 2], "the request body must be a JSON object", None),
    ({"model": "m", "training_file": "f", "n_gpus": 8}, "Unrecognized request argument supplied: n_gpus", "n_gpus"),
    ({"training_file": "f"}, "Missing required parameter: 'model'", "model"),
    ({"model": "m"}, "Missing required parameter: 'training_file'", "training_file"),
    ({"model": "m", "training_file": "f", "method": {"type": "rlhf"}},
     "method type 'rlhf' is not available: use supervised, dpo, reinforcement", "method.type"),
    ({"model": "m", "training_file": "f", "method": {"type": "reinforcement"}},
     "Missing required parameter: 'method.reinforcement.grader'", "method.reinforcement.grader"),
    ({"model": "m", "training_file": "f", "method": {"type": "reinforcement", "reinforcement": {
        "grader": {"type": "string_check", "name": "g", "input": "{{sample.output_text}}", "reference": "a",
                   "operation": "eq"}, "hyperparameters": {"eval_samples": 10}}}},
     "hyperparameter eval_samples=10 is not supported for method reinforcement: the held-out pass is greedy: one "
     "reply per validation prompt; leave it out or use 'auto'",
     "hyperparameters.eval_samples"),
    ({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 0}},
     "invalid hyperparameter n_epochs=0: use 'auto' or an integer in 1..100", "hyperparameters.n_epochs"),
    ({"model": "m", "training_file": "f", "hyperparameters": {"beta": 0.2}},
     "unknown hyperparameter 'beta' for method supervised: use n_epochs, batch_size, learning_rate_multiplier, "
     "finetuning_type", "hyperparameters.beta"),
    ({"model": "m", "training_file": "f", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
     "invalid hyperparameter beta=0: use 'auto' or a number in (0, 10]", "hyperparameters.beta"),
    ({"model": "m", "training_file": "f", "suffix": "a" * 41}, "suffix is at most 40 characters", "suffix"),
    ({"model": "m", "training_file": "f", "seed": True}, "seed must be an integer in 0..2147483647", "seed"),
    ({"model": "m", "training_file": "f", "metadata": {"k": 1}},
     "metadata is at most 16 string pairs (keys up to 64 characters, values up to 512)", "metadata"),
])
def test_the_jobs_request_keeps_its_refusal_messages(body, message, param):
    with pytest.raises(APIError) as e:
        FineTuningJobCreate.model_validate(body)
    assert (e.value.status, e.value.message, e.value.param) == (400, message, param)


def _round_trip(ours, sdk_type):
    """ours -> JSON -> the SDK's type -> ours: nothing lost, nothing the SDK does not read as a field."""
    sent = ours.model_dump(mode="json")
    theirs = sdk_type.model_validate(sent)
    back = type(ours).model_validate(theirs.model_dump(mode="json", exclude_unset=True))
    assert back.model_dump(mode="json") == sent
    assert not ours.model_extra
    return theirs


def test_responses_round_trip_the_sdks_types():
    from openai.types import CreateEmbeddingResponse, FileDeleted as SDKFileDeleted, FileObject as SDKFileObject
    from openai.types import Model as SDKModel
    from openai.types.chat import ChatCompletion as SDKChat, ChatCompletionChunk as SDKChunk
    from openai.types.completion import Completion as SDKCompletion
    from openai.types.fine_tuning import FineTuningJob as SDKJob, FineTuningJobEvent as SDKEvent
    from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint as SDKCheckpoint

    head = {"id": "chatcmpl-1", "created": 1, "model": "m"}
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    reply = ChatCompletion(**head, choices=[{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                             "finish_reason": "stop"}], usage=usage)
    assert "citations" not in reply.model_dump() and _round_trip(reply, SDKChat).choices[0].message.content == "hi"
    cited = ChatCompletion.model_validate({**reply.model_dump(), "citations": [
        {"index": 1, "source": "a.md", "section": "s", "text": "t", "similarity": 0.5, "start": 0, "end": 1}]})
    assert cited.model_dump(mode="json")["citations"][0]["source"] == "a.md"
    first = ChatCompletionChunk(**head, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    last = ChatCompletionChunk(**head, choices=[{"index": 0, "delta": {}, "finish_reason": "length"}])
    only_usage = ChatCompletionChunk(**head, choices=[], usage=usage)
    assert last.model_dump()["choices"][0]["delta"] == {} and "usage" not in last.model_dump()
    for chunk in (first, last, only_usage):
        _round_trip(chunk, SDKChunk)
    _round_trip(Completion(**{**head, "id": "cmpl-1"}, choices=[{"index": 0, "text": "x", "finish_reason": "stop"}],
                           usage=usage), SDKCompletion)
    _round_trip(EmbeddingResponse(data=[{"index": 0, "embedding": [0.5, 1.0]}], model="minilm-l6",
                                  usage={"prompt_tokens": 2, "total_tokens": 2}), CreateEmbeddingResponse)
    assert "parent" not in Model(id="base", created=1, owned_by="tunelab").model_dump()
    _round_trip(Model(id="run", created=1, owned_by="alice", parent="base"), SDKModel)
    row = {"id": "file-1", "bytes": 10, "created_at": 1, "filename": "t.jsonl", "purpose": "fine-tune",
           "status": "processed", "status_details": None}
    _round_trip(FileObject.from_row(row), SDKFileObject)
    _round_trip(FileDeleted(id="file-1", deleted=True), SDKFileDeleted)
    job = _round_trip(FineTuningJob.from_row(JOB_ROW), SDKJob)
    assert (job.method.type, job.method.dpo.hyperparameters.beta, job.error.code) == ("dpo", 0.1, "training_failed")
    assert job.organization_id == "alice" and not hasattr(job.hyperparameters, "beta")
    grader = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}", "reference": "{{item.a}}",
              "operation": "eq"}
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, "finetuning_type": "lora",
          "compute_multiplier": 1.5, "eval_interval": "auto", "eval_samples": "auto", "reasoning_effort": "default"}
    rl = _round_trip(FineTuningJob.from_row({**JOB_ROW, "method": {"type": "reinforcement", "grader": grader},
                                             "hyperparameters": hp, "status": "running"}), SDKJob)
    assert rl.method.reinforcement.grader.operation == "eq" and rl.method.reinforcement.hyperparameters.n_epochs == 2
    assert rl.method.reinforcement.hyperparameters.compute_multiplier == 1.5 and rl.method.dpo is None
    _round_trip(JobEvent.from_row({"id": "ftevent-1", "created_at": 1, "level": "info", "message": "Step 1",
                                   "type": "metrics", "data": {"step": 1, "train_loss": 2.0}}), SDKEvent)
    ckpt = _round_trip(JobCheckpoint.from_row({"id": "ftckpt-1", "created_at": 1, "name": "ft-x:step-2",
                                               "job_id": "ftjob-abc", "step": 2, "metrics": {"train_loss": 1.5}}),
                       SDKCheckpoint)
    assert (ckpt.step_number, ckpt.metrics.train_loss) == (2, 1.5)


def _app(tmp_path, upstream=None):
    from tunelab.serve.app import create_app
    from tunelab.serve.state import AppState

    state = AppState(home=tmp_path / "home", runs=tmp_path / "runs", base="base", upstream=upstream)
    return create_app(state)  # every module: the inference routes, files, jobs and the Studio


def test_the_registry_is_every_mounted_route(tmp_path):
    from tunelab.serve.routes import ROUTES, mounted
    from tunelab.serve.vllm import Upstream

    app = _app(tmp_path)
    got = mounted(app.routes)
    assert sorted((m, p) for m, p, _ in got) == sorted((r.method, r.path) for r in ROUTES)
    assert len(ROUTES) == len({(r.method, r.path) for r in ROUTES})
    endpoint = {(m, p): e for m, p, e in got}
    assert all(endpoint[r.method, r.path] is r.endpoint for r in ROUTES if r.endpoint is not None)
    assert {r.path for r in ROUTES if r.proxied} == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    proxied = {(m, p): e for m, p, e in mounted(_app(tmp_path, Upstream("http://127.0.0.1:9")).routes)}
    for r in ROUTES:  # with vLLM: the proxied routes forwarded, every other one tunelab's own
        assert (proxied[r.method, r.path] is r.endpoint) == (not r.proxied) or r.endpoint is None


def test_every_json_route_declares_its_response_model(tmp_path):
    """/v1 and /studio/api routes return a protocol model (a download returns the file itself)."""
    import typing

    from fastapi.responses import FileResponse

    from tunelab.serve.protocol.common import Response
    from tunelab.serve.routes import mounted

    missing = []
    for method, path, endpoint in mounted(_app(tmp_path).routes):
        if not path.startswith(("/v1/", "/studio/api/")):
            continue  # the Studio's pages and HTML fragments
        ret = typing.get_type_hints(endpoint).get("return")
        if not (isinstance(ret, type) and issubclass(ret, (Response, FileResponse))):
            missing.append(f"{method} {path}: {ret}")
    assert not missing, missing


def test_the_app_state_is_typed(tmp_path):
    from tunelab.serve.state import AppState

    state = AppState(home=tmp_path, runs=tmp_path)
    assert not hasattr(state, "extra")
    assert (state.pool, state.upstream, state.jobs_runner, state.jobs_max_concurrent, state.job_overrides) == \
        (None, None, None, 1, [])
    serve = Path(__file__).resolve().parents[2] / "src" / "tunelab" / "serve"
    used = [f"{p.relative_to(serve)}:{i}" for p in serve.rglob("*.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"\bstate\.extra\b|\.extra\[", line)]
    assert not used, used


class FakePool:
    """Enough of a ModelPool for /v1/models; nothing is decoded here."""

    def runs(self, tenant):
        return []


def test_a_validation_failure_is_a_400_in_openais_shape(tmp_path):
    from tunelab.serve.state import AppState

    state = AppState(home=tmp_path / "home", runs=tmp_path / "runs", base="base", auth=False, jobs_max_concurrent=0)
    modules = ["tunelab.serve.files_api", "tunelab.serve.jobs_api"]
    with start_server(state, pool=FakePool(), extra_modules=modules) as srv:
        models = srv.client().models.list()  # the response model, read by the official client
        assert [m.id for m in models.data][:1] == ["base"] and models.data[0].owned_by == "tunelab"
        for path, body, param in [("/chat/completions", {"model": 1, "messages": []}, "model"),
                                  ("/chat/completions", {"model": "base", "messages": [{"role": "bot"}]},
                                   "messages.0.role"),
                                  ("/embeddings", {"model": "minilm-l6"}, "input"),
                                  ("/fine_tuning/jobs", {"model": "m", "training_file": "f", "seed": "x"}, "seed")]:
            r = httpx.post(srv.url + path, json=body)
            assert r.status_code == 400, r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
            assert (r.json()["error"]["type"], r.json()["error"]["param"]) == ("invalid_request_error", param)
        with pytest.raises(openai.BadRequestError) as e:
            srv.client().fine_tuning.jobs.create(model="m", training_file="f", hyperparameters={"n_epochs": 0})
        assert e.value.body["message"] == "invalid hyperparameter n_epochs=0: use 'auto' or an integer in 1..100"
        with pytest.raises(openai.NotFoundError):
            srv.client().fine_tuning.jobs.create(model="no-such-model", training_file="f")
