"""The request guard (serve/guard.py) through a real server: body limits (413, chunked too), JSON depth,
int digits and lone surrogates (400), and for browser-facing requests (`--no-auth`, the Studio) the Host
(DNS rebinding), Origin and Content-Type checks (403 / 415)."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from tests.serve.conftest import start_server

MODULES = ("tunelab.serve.files_api", "tunelab.serve.jobs_api", "tunelab.serve.studio")


class FakePool:
    """Enough of a ModelPool for /v1/models; nothing is decoded here."""

    def runs(self, tenant):
        return []


def _state(tmp_path, auth: bool):
    from tunelab.serve.state import ServeState

    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base="base", auth=auth, kb=tmp_path / "kb")
    state.jobs_max_concurrent = 0  # no job runs here
    return state


@pytest.fixture(scope="module")
def noauth(tmp_path_factory):
    state = _state(tmp_path_factory.mktemp("guard-noauth"), auth=False)
    with start_server(state, pool=FakePool(), extra_modules=MODULES) as srv:
        yield srv


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    from tunelab.serve.auth import create_key

    state = _state(tmp_path_factory.mktemp("guard-keys"), auth=True)
    key = create_key(state.db_path, "alice")[1]
    with start_server(state, pool=FakePool(), extra_modules=MODULES, keys={"alice": key}) as srv:
        yield srv


def send(port, method, path, body=None, headers=None, chunks=None):
    """(status, parsed JSON or raw text) of one plain HTTP request; `headers` may override Host."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = dict(headers or {})
    try:
        skip_host = "Host" in h
        conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        if chunks is not None:
            h["Transfer-Encoding"] = "chunked"
        elif body is not None:
            h["Content-Length"] = str(len(body))
        for k, v in h.items():
            conn.putheader(k, v)
        conn.endheaders()
        if chunks is not None:
            for c in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(c), c))
            conn.send(b"0\r\n\r\n")
        elif body is not None:
            conn.send(body)
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def _err(result, status, code=None):
    got, body = result
    assert got == status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code, err
    return err


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    out = []
    for k, v in fields.items():
        out.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data) in files.items():
        out.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{b}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={b}"


TRAIN = (json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
         + "\n").encode() * 2
JSON = {"Content-Type": "application/json"}


# ---- --no-auth: what a page of another site could make the browser send ------------------------------------
def test_no_auth_refuses_a_foreign_origin_and_writes_nothing(noauth):
    body, ctype = multipart({"purpose": "fine-tune"}, {"file": ("t.jsonl", TRAIN)})
    files = noauth.state.files_dir
    before = sorted(p.name for p in files.iterdir())
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{noauth.port + 1}", "https://127.0.0.1"):
        _err(send(noauth.port, "POST", "/v1/files", body, {"Content-Type": ctype, "Origin": origin}), 403,
             "cross_origin")
    _err(send(noauth.port, "GET", "/v1/models", headers={"Origin": "http://evil.example"}), 403)
    assert sorted(p.name for p in files.iterdir()) == before
    # the server's own page (same origin), and a client that sends no Origin, still work
    status, f = send(noauth.port, "POST", "/v1/files", body, {"Content-Type": ctype,
                                                              "Origin": f"http://127.0.0.1:{noauth.port}"})
    assert status == 200 and f["status"] == "processed", f
    assert send(noauth.port, "GET", "/v1/models")[0] == 200
    assert send(noauth.port, "GET", "/v1/models", headers={"Host": f"localhost:{noauth.port}",
                                                          "Origin": f"http://localhost:{noauth.port}"})[0] == 200


def test_no_auth_refuses_a_foreign_host_dns_rebinding(noauth):
    for host in ("evil.example", f"evil.example:{noauth.port}", f"127.0.0.1.evil.example:{noauth.port}",
                 f"127.0.0.1:{noauth.port + 1}", ""):
        _err(send(noauth.port, "GET", "/v1/models", headers={"Host": host}), 403, "invalid_host")
        _err(send(noauth.port, "GET", "/", headers={"Host": host}), 403, "invalid_host")
    for host in (f"127.0.0.1:{noauth.port}", f"localhost:{noauth.port}", f"LOCALHOST:{noauth.port}"):
        assert send(noauth.port, "GET", "/v1/models", headers={"Host": host})[0] == 200, host


def test_no_auth_state_changes_need_json_or_a_multipart_upload(noauth):
    job = json.dumps({"model": "base", "training_file": "file-nope"}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        h = {"Content-Type": ctype} if ctype else {}
        _err(send(noauth.port, "POST", "/v1/fine_tuning/jobs", job, h), 415, "unsupported_media_type")
        _err(send(noauth.port, "POST", "/studio/api/runs/x/export", b'{"to": "gguf"}', h), 415)
    body, ctype = multipart({"name": "kb1"}, {"files": ("a.txt", b"hello")})
    _err(send(noauth.port, "POST", "/v1/fine_tuning/jobs", body, {"Content-Type": ctype}), 415)  # not an upload route
    _err(send(noauth.port, "POST", "/v1/files", b"x", {"Content-Type": "text/plain"}), 415)
    # JSON gets through to the route (its own 404 for the unknown file); a bodiless DELETE needs none
    _err(send(noauth.port, "POST", "/v1/fine_tuning/jobs", job, {"Content-Type": "application/json; charset=utf-8"}),
         404)
    _err(send(noauth.port, "DELETE", "/v1/files/file-nope"), 404)


# ---- with keys: the Studio's routes are checked, /v1 is the key's --------------------------------------------
def test_with_keys_the_studio_is_checked_and_v1_is_left_to_the_key(keyed):
    auth = {"Authorization": f"Bearer {keyed.keys['alice']}"}
    _err(send(keyed.port, "GET", "/studio/api/kbs", headers={**auth, "Host": "evil.example"}), 403, "invalid_host")
    _err(send(keyed.port, "GET", "/studio/api/kbs", headers={**auth, "Origin": "http://evil.example"}), 403)
    _err(send(keyed.port, "POST", "/studio/api/runs/x/export", b'{"to": "gguf"}',
              {**auth, "Content-Type": "text/plain"}), 415)
    assert send(keyed.port, "GET", "/studio/api/kbs", headers=auth)[0] == 200
    assert send(keyed.port, "GET", "/v1/models", headers={**auth, "Origin": "http://evil.example"})[0] == 200
    _err(send(keyed.port, "GET", "/v1/models", headers={"Origin": "http://evil.example"}), 401)


# ---- bodies --------------------------------------------------------------------------------------------------
def _nested(depth: int) -> bytes:
    return b'{"model": "base", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + \
        b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/fine_tuning/jobs", "/studio/api/runs/x/export",
                                  "/v1/embeddings"])
def test_deep_json_and_huge_ints_are_400s(noauth, path):
    for depth in (100, 10_000, 500_000):
        err = _err(send(noauth.port, "POST", path, _nested(depth), JSON), 400, "invalid_json")
        assert "nested deeper" in err["message"]
    big = b'{"model": "base", "n_epochs": ' + b"9" * 5000 + b"}"
    err = _err(send(noauth.port, "POST", path, big, JSON), 400, "invalid_json")
    assert "digits" in err["message"]
    err = _err(send(noauth.port, "POST", path, b'{"model": "base", "input": "a\\ud800b"}', JSON), 400, "invalid_json")
    assert "surrogate" in err["message"]
    err = _err(send(noauth.port, "POST", path, b'{"model": "b\xff\xfe"}', JSON), 400, "invalid_json")
    # a paired surrogate is a real character: no guard error
    status, body = send(noauth.port, "POST", path, b'{"model": "\\ud83d\\ude00"}', JSON)
    assert status != 500 and body["error"]["code"] != "invalid_json"


def test_bodies_over_the_limit_are_413s_chunked_too(noauth):
    state = noauth.state
    big = b'{"model": "base", "input": "' + b"x" * (state.body_limit + 10) + b'"}'
    _err(send(noauth.port, "POST", "/v1/embeddings", big, JSON), 413, "request_too_large")
    _err(send(noauth.port, "POST", "/v1/embeddings", headers=JSON, chunks=[big[i:i + 65536] for i in
                                                                          range(0, len(big), 65536)]), 413)
    before = sorted(p.name for p in state.files_dir.iterdir())
    limit, state.upload_limit = state.upload_limit, 50_000
    try:
        body, ctype = multipart({"purpose": "fine-tune"}, {"file": ("t.jsonl", TRAIN * 20_000)})
        for path in ("/v1/files", "/studio/api/kbs"):
            _err(send(noauth.port, "POST", path, body, {"Content-Type": ctype}), 413, "request_too_large")
            _err(send(noauth.port, "POST", path, headers={"Content-Type": ctype},
                      chunks=[body[i:i + 16384] for i in range(0, len(body), 16384)]), 413, "request_too_large")
    finally:
        state.upload_limit = limit
    assert sorted(p.name for p in state.files_dir.iterdir()) == before


# ---- names: fullmatch ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["notes\n", "notes\r\n", "a\nb", "tuned\n"])
def test_a_name_with_a_newline_is_refused(name):
    from tunelab.serve.errors import APIError
    from tunelab.serve.names import check_name

    with pytest.raises(APIError) as e:
        check_name(name, "knowledge_base")
    assert e.value.status == 400


def test_a_kb_name_with_a_newline_is_refused_and_not_written(noauth):
    body, ctype = multipart({"name": "notes\n"}, {"files": ("a.txt", b"hello")})
    _err(send(noauth.port, "POST", "/studio/api/kbs", body, {"Content-Type": ctype}), 400, "invalid_name")
    assert not (noauth.state.home / "kb-docs").exists() or not any((noauth.state.home / "kb-docs").rglob("*\n*"))


def test_lone_surrogates_and_newline_names_on_the_real_model_are_400s(server):
    """Through the tiny model's tokenizer (before the guard: a TypeError and a 500)."""
    auth = {**JSON, "Authorization": f"Bearer {server.keys['alice']}"}
    body = b'{"model": "tuned", "max_tokens": 2, "messages": [{"role": "user", "content": "hi \\udc80 there"}]}'
    _err(send(server.port, "POST", "/v1/chat/completions", body, auth), 400, "invalid_json")
    chat = {"model": "tuned", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}],
            "knowledge_base": "notes\n"}
    _err(send(server.port, "POST", "/v1/chat/completions", json.dumps(chat).encode(), auth), 400, "invalid_name")
