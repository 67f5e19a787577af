"""`tunelab serve --engine vllm`: the vLLM command line, the one-line error without vLLM, and the
proxy (auth, tenancy, model names, streaming, errors) against a scripted OpenAI upstream."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.serve.conftest import free_port, start_server, uvicorn_thread


@pytest.fixture(scope="module")
def venv(serve_env, tmp_path_factory):
    """runs: default/first (r 4), alice/tuned (r edited to 20), bob/bobs (r 4), alice/unfinished."""
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("vllm")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(serve_env["model_dir"]), max_adapters=2)
    trained = serve_env["trained"]
    for tenant, run in [("default", "first"), ("alice", "tuned"), ("bob", "bobs"), ("alice", "unfinished")]:
        shutil.copytree(trained, state.tenant_runs(tenant) / run)
    (state.tenant_runs("alice") / "unfinished" / "DONE").unlink()
    cfg_path = state.tenant_runs("alice") / "tuned" / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["r"] = 20
    cfg_path.write_text(json.dumps(cfg))
    keys = {t: create_key(state.db_path, t)[1] for t in ("alice", "bob")}
    return {"state": state, "keys": keys}


def test_the_command_line(venv):
    from tunelab.serve.vllm import round_rank, servable_runs, vllm_command

    state = venv["state"]
    loras = servable_runs(state)
    assert sorted(loras) == ["alice/tuned", "bob/bobs", "default/first"]  # not the unfinished run
    cmd = vllm_command(state, 8123, extra=["--gpu-memory-utilization", "0.5"])
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]

    def arg(flag):
        return cmd[cmd.index(flag) + 1]

    assert arg("--model") == state.base and arg("--served-model-name") == state.base
    assert arg("--host") == "127.0.0.1" and arg("--port") == "8123" and "--enable-lora" in cmd
    i = cmd.index("--lora-modules")
    mods = dict(m.split("=", 1) for m in cmd[i + 1:i + 4])
    assert mods["alice/tuned"] == str((state.tenant_runs("alice") / "tuned" / "adapter").resolve())
    assert mods["default/first"] == str((state.runs / "first" / "adapter").resolve())
    assert arg("--max-loras") == "2"  # 3 runs, capped by --max-adapters 2
    assert arg("--max-lora-rank") == "32"  # r 20 rounds up
    assert cmd[-2:] == ["--gpu-memory-utilization", "0.5"]
    assert [round_rank(r) for r in (1, 8, 9, 64, 65, 256)] == [8, 8, 16, 64, 128, 256]


def test_no_vllm_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    import importlib.util

    from tunelab.cli.main import run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(SystemExit) as e:
        run(["serve", "--engine", "vllm", "--runs", str(tmp_path), "--no-auth"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install vllm (Linux + CUDA)" in err


# ---- the scripted upstream -------------------------------------------------------------------------------------
def scripted_upstream(seen: list):
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append(body)
        if body.get("max_tokens") == 9999:
            return JSONResponse({"error": {"message": "too many tokens", "type": "BadRequestError",
                                           "param": None, "code": 400}}, status_code=400)
        head = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return {**head, "object": "chat.completion", "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                                                   "total_tokens": 5},
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"},
                                 "finish_reason": "stop"}]}

        async def events():
            for delta, fin in [({"role": "assistant", "content": ""}, None), ({"content": "hel"}, None),
                               ({"content": "lo"}, None), ({}, "stop")]:
                chunk = {**head, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def proxy(venv):
    from tunelab.serve.vllm import Upstream, servable_runs

    seen: list = []
    state = venv["state"]
    with uvicorn_thread(scripted_upstream(seen), "the scripted upstream", start_s=30) as port:
        url = f"http://127.0.0.1:{port}"
        state.upstream = Upstream(url, servable_runs(state))
        with start_server(state, keys=venv["keys"]) as srv:
            yield srv, seen
        state.upstream = None


def test_chat_passes_through_with_the_lora_name(proxy):
    srv, seen = proxy
    alice = srv.client(srv.keys["alice"])
    seen.clear()
    r = alice.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "hello there" and r.model == "tuned"
    assert seen[-1]["model"] == "alice/tuned" and seen[-1]["messages"][0]["content"] == "hi"
    chunks = list(alice.chat.completions.create(model="tuned", stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hello"
    assert chunks[-1].choices[0].finish_reason == "stop" and {c.model for c in chunks} == {"tuned"}
    assert seen[-1]["model"] == "alice/tuned" and seen[-1]["stream"] is True
    r = alice.chat.completions.create(model=srv.state.base, messages=[{"role": "user", "content": "hi"}])
    assert seen[-1]["model"] == srv.state.base
    ids = [m.id for m in alice.models.list().data]
    assert ids == [srv.state.base, "tuned"]


def test_tenancy_and_auth_before_upstream(proxy):
    import openai

    srv, seen = proxy
    seen.clear()
    bob = srv.client(srv.keys["bob"])
    with pytest.raises(openai.NotFoundError) as e:
        bob.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and "did you mean" not in e.value.message  # not alice's
    with pytest.raises(openai.NotFoundError) as e:
        bob.chat.completions.create(model="bobss", messages=[{"role": "user", "content": "hi"}])
    assert "did you mean 'bobs'?" in e.value.message, e.value.message  # bob's own run
    with pytest.raises(openai.NotFoundError) as e:
        bob.completions.create(model="tuneed", prompt="hi")
    assert "tuned" not in e.value.message.replace("tuneed", ""), e.value.message
    with pytest.raises(openai.AuthenticationError):
        srv.client("tl-wrong").chat.completions.create(model="tuned", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        srv.client(srv.keys["alice"]).chat.completions.create(model="unfinished",
                                                              messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_supported"
    assert seen == []  # nothing reached vLLM
    assert [m.id for m in bob.models.list().data] == [srv.state.base, "bobs"]


def test_upstream_errors(proxy):
    import openai

    srv, _ = proxy
    alice = srv.client(srv.keys["alice"])
    with pytest.raises(openai.BadRequestError) as e:  # an upstream 4xx keeps its status and message
        alice.chat.completions.create(model="tuned", max_tokens=9999, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["message"] == "too many tokens"
    up = srv.state.upstream
    url, up.url = up.url, f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        with pytest.raises(openai.InternalServerError) as e:
            alice.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 503 and e.value.body["code"] == "upstream_unavailable"
        assert e.value.body["type"] == "server_error"
    finally:
        up.url = url
