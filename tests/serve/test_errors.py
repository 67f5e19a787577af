"""Malformed requests through the real server: each gets a 4xx in OpenAI's error shape (never a 500),
and none writes anything (runs, knowledge bases, the server's files)."""

from __future__ import annotations

import http.client
import json

import openai
import pytest

OK_MSG = [{"role": "user", "content": "hi"}]


def chat(**kw):
    body = {"model": "tuned", "messages": OK_MSG, "max_tokens": 4}
    body.update(kw)
    return ("POST", "/chat/completions", body)


def _drop(key):
    body = {"model": "tuned", "messages": OK_MSG}
    body.pop(key)
    return ("POST", "/chat/completions", body)


# (name, (method, path, json body | raw bytes), expected status)
CASES = [
    ("invalid json", ("POST", "/chat/completions", b'{"model": "tuned", "messages": ['), 400),
    ("array body", ("POST", "/chat/completions", b"[1, 2]"), 400),
    ("text body", ("POST", "/chat/completions", b"hello"), 400),
    ("missing model", _drop("model"), 400),
    ("missing messages", _drop("messages"), 400),
    ("empty messages", chat(messages=[]), 400),
    ("model not a string", chat(model=5), 400),
    ("temperature string", chat(temperature="hot"), 400),
    ("temperature negative", chat(temperature=-1), 400),
    ("temperature huge", chat(temperature=5), 400),
    ("top_p zero", chat(top_p=0), 400),
    ("max_tokens negative", chat(max_tokens=-1), 400),
    ("max_tokens zero", chat(max_tokens=0), 400),
    ("max_tokens huge", chat(max_tokens=10**9), 400),
    ("max_tokens string", chat(max_tokens="10"), 400),
    ("max_tokens float", chat(max_tokens=1.5), 400),
    ("max_completion_tokens huge", chat(max_tokens=None, max_completion_tokens=10**6), 400),
    ("unknown model", chat(model="no-such-run"), 404),
    ("dotdot model", chat(model="../tuned"), 400),
    ("traversal to another tenant", chat(model="../../runs/.tenants/bob/bobs"), 400),
    ("hidden folder as model", chat(model=".tenants"), 400),
    ("unknown role", chat(messages=[{"role": "wizard", "content": "hi"}]), 400),
    ("content wrong type", chat(messages=[{"role": "user", "content": 5}]), 400),
    ("image content", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400),
    ("last message not the user's", chat(messages=OK_MSG + [{"role": "assistant", "content": "yo"}]), 400),
    ("five stop strings", chat(stop=["a", "b", "c", "d", "e"]), 400),
    ("empty stop string", chat(stop=""), 400),
    ("n = 3", chat(n=3), 400),
    ("tools", chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400),
    ("logprobs", chat(logprobs=True), 400),
    ("stream not a bool", chat(stream="yes"), 400),
    ("seed string", chat(seed="7"), 400),
    ("kb traversal", chat(knowledge_base="../kb"), 400),
    ("unknown kb", chat(knowledge_base="nothing-here"), 404),
    ("kb_k out of range", chat(knowledge_base="notes", knowledge_base_k=1000), 400),
    ("other tenant's run", chat(model="bobs"), 404),
    ("completion empty prompt", ("POST", "/completions", {"model": "tuned", "prompt": ""}), 400),
    ("completion bad token ids", ("POST", "/completions", {"model": "tuned", "prompt": [1, 10**7]}), 400),
    ("completion two prompts", ("POST", "/completions", {"model": "tuned", "prompt": ["a", "b"]}), 400),
    ("completion prompt dict", ("POST", "/completions", {"model": "tuned", "prompt": {"a": 1}}), 400),
    ("embeddings unknown model", ("POST", "/embeddings", {"model": "tuned", "input": "x"}), 404),
    ("embeddings empty input", ("POST", "/embeddings", {"model": "minilm-l6", "input": ""}), 400),
    ("embeddings token input", ("POST", "/embeddings", {"model": "minilm-l6", "input": [1, 2]}), 400),
    ("embeddings dimensions", ("POST", "/embeddings", {"model": "minilm-l6", "input": "x", "dimensions": 8}), 400),
    ("unknown model id", ("GET", "/models/nope", None), 404),
    ("unknown route", ("GET", "/nope", None), 404),
    ("unknown route outside v1", ("POST", "/../../etc/passwd", None), 404),
    ("wrong method", ("GET", "/chat/completions", None), 405),
    ("delete an unknown model", ("DELETE", "/models/nope", None), 404),  # a real one is deleted: test_jobs_reinforcement
]


def _snapshot(serve_env) -> dict:
    tmp = serve_env["tmp"]
    out = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file() and not p.name.startswith("serve.db"):
            out[str(p.relative_to(tmp))] = p.stat().st_size
    return out


class Raw:
    """Plain HTTP to the server (http.client: bodies sent exactly as given, chunked too)."""

    def __init__(self, port: int, key: str | None = None):
        self.port, self.key = port, key

    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None, chunks=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Content-Type": "application/json"}
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            if chunks is not None:
                conn.request(method, "/v1" + path, body=chunks, headers=h, encode_chunked=True)
            else:
                conn.request(method, "/v1" + path, body=data, headers=h)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def _check_shape(resp, status: int, name: str) -> None:
    code, text = resp
    assert code == status, (name, code, text)
    err = json.loads(text)["error"]
    assert set(err) == {"message", "type", "param", "code"}, name
    assert isinstance(err["message"], str) and err["message"], name
    assert err["type"] in ("invalid_request_error", "authentication_error", "rate_limit_error"), name


def test_malformed_requests_get_4xx_in_openai_shape_and_write_nothing(server, serve_env):
    before = _snapshot(serve_env)
    c = Raw(server.port, server.keys["alice"])
    for name, (method, path, body), status in CASES:
        if isinstance(body, bytes):
            _check_shape(c.request(method, path, raw=body), status, name)
        else:
            _check_shape(c.request(method, path, body), status, name)
    big = b'{"model": "tuned", "messages": [{"role": "user", "content": "' + b"x" * (2 << 20) + b'"}]}'
    _check_shape(c.request("POST", "/chat/completions", raw=big), 413, "oversized body")
    _check_shape(c.request("POST", "/chat/completions", chunks=(b"x" * (1 << 20) for _ in range(3))), 413,
                 "oversized chunked body")
    anon = Raw(server.port)
    _check_shape(anon.request("POST", "/chat/completions", chat()[2]), 401, "missing key")
    for bad in ("Bearer tl-wrong", "Basic abc", "Bearer"):
        _check_shape(anon.request("POST", "/chat/completions", chat()[2], headers={"Authorization": bad}), 401, bad)
    _check_shape(anon.request("GET", "/models", headers={"Authorization": "Bearer nope"}), 401, "models, bad key")
    assert len(CASES) + 6 >= 25
    assert _snapshot(serve_env) == before


def test_the_openai_client_raises_its_typed_errors(server):
    alice = server.client(server.keys["alice"])
    with pytest.raises(openai.BadRequestError) as e:
        alice.chat.completions.create(model="tuned", messages=OK_MSG, max_tokens=-5)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model="gpt-4o", messages=OK_MSG)
    with pytest.raises(openai.AuthenticationError):
        server.client("tl-not-a-key").models.list()
    with pytest.raises(openai.BadRequestError) as e:  # validation errors name the field
        alice.chat.completions.create(model="tuned", messages=OK_MSG, temperature=3)
    assert e.value.body["param"] == "temperature"


def test_a_server_fault_is_a_500_in_the_error_shape_without_details(server_factory, tmp_path):
    from tunelab.serve.state import ServeState

    class Broken:  # a pool whose every call fails: a bug of the server, not of the request
        def runs(self, tenant):
            raise RuntimeError("secret detail")

    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base="base", auth=False)
    with server_factory(state, pool=Broken()) as srv:
        code, text = Raw(srv.port).request("GET", "/models")
    assert code == 500 and "secret detail" not in text.decode()
    assert json.loads(text)["error"] == {"message": "internal server error", "type": "server_error",
                                         "param": None, "code": "server_error"}


def test_a_base_without_safetensors_is_refused(tmp_path):
    from tunelab.errors import TunelabError
    from tunelab.serve.model_pool import check_safetensors

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(TunelabError, match="safetensors only"):
        check_safetensors(str(tmp_path))
