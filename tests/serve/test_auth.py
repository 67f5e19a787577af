"""API keys (`tunelab serve keys ...`: shown once, stored hashed, revocable), tenants, --no-auth,
the per-key rate limit, and the bind checks of `tunelab serve`."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import openai
import pytest

from tunelab.cli.main import run
from tunelab.serve.auth import RateLimiter
from tunelab.serve.state import DEFAULT_TENANT, ServeState


def _cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        run(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_keys_create_list_revoke(server, serve_env, monkeypatch, capsys):
    monkeypatch.setenv("TUNELAB_SERVE_HOME", str(server.state.home))
    code, out, err = _cli(["serve", "keys", "create", "--tenant", "carol"], capsys)
    key = out.strip()
    assert code == 0 and key.startswith("tl-") and len(key) > 40 and "not shown again" in err
    raw = server.state.db_path.read_bytes() + b"".join(
        p.read_bytes() for p in server.state.home.glob("serve.db-wal"))
    assert key.encode() not in raw  # only the hash is stored
    with sqlite3.connect(server.state.db_path) as db:
        hashes = {r[0] for r in db.execute("SELECT hash FROM keys")}
    assert hashlib.sha256(key.encode()).hexdigest() in hashes
    carol = server.client(key)
    assert {m.id for m in carol.models.list()} == {server.state.base, "minilm-l6", "minilm-l6-static"}
    code, out, _ = _cli(["serve", "keys", "list", "--json"], capsys)
    rows = json.loads(out)
    mine = next(r for r in rows if r["tenant"] == "carol")
    assert code == 0 and mine["prefix"] == key[:7] and mine["revoked"] is None
    assert "hash" not in mine
    code, out, _ = _cli(["serve", "keys", "revoke", mine["id"]], capsys)
    assert code == 0
    with pytest.raises(openai.AuthenticationError) as e:
        carol.models.list()
    assert e.value.body["code"] == "invalid_api_key"
    code, _, err = _cli(["serve", "keys", "revoke", mine["id"]], capsys)  # twice: one line, exit 2
    assert code == 2 and err.count("\n") == 1
    code, _, err = _cli(["serve", "keys", "create", "--tenant", "../evil"], capsys)
    assert code == 2 and "invalid tenant" in err


def test_no_auth_is_the_default_tenant_and_keys_are_ignored(server, serve_env, tmp_path, server_factory):
    state = ServeState(home=tmp_path / "home", runs=serve_env["state"].runs, base=server.state.base, auth=False)
    with server_factory(state, pool=server.pool) as srv:
        models = {m.id for m in srv.client(None).models.list()}
        assert models == {state.base, "minilm-l6", "minilm-l6-static"}  # runs/ has only .tenants
        r = srv.client("anything").chat.completions.create(model=state.base, messages=[{"role": "user", "content": "hi"}],
                                                          max_tokens=3)
        assert r.usage.completion_tokens >= 1
        with pytest.raises(openai.NotFoundError):  # a tenant's run is not the default tenant's
            srv.client(None).chat.completions.create(model="tuned", messages=[{"role": "user", "content": "x"}])
    assert state.tenant_runs(DEFAULT_TENANT) == state.runs


def test_rate_limit_is_a_429_per_key(server, serve_env, tmp_path, server_factory):
    from tunelab.serve.auth import create_key

    state = ServeState(home=tmp_path / "home", runs=serve_env["state"].runs, base=server.state.base,
                       rate_per_minute=3)
    k1, k2 = create_key(state.db_path, "alice")[1], create_key(state.db_path, "alice")[1]
    with server_factory(state, pool=server.pool) as srv:
        c1, c2 = srv.client(k1), srv.client(k2)
        for _ in range(3):
            c1.models.list()
        with pytest.raises(openai.RateLimitError) as e:
            c1.models.list()
        assert e.value.body["type"] == "rate_limit_error" and int(e.value.response.headers["retry-after"]) >= 1
        assert c2.models.list().data  # another key has its own budget


def test_rate_limiter_window():
    lim = RateLimiter(2, window=60)
    assert lim.hit("k", now=0) == 0 and lim.hit("k", now=1) == 0
    assert lim.hit("k", now=2) == pytest.approx(58)  # the hit at 0 leaves the window at 60
    assert lim.hit("k", now=60.5) == 0 and lim.hit("other", now=2) == 0


@pytest.mark.parametrize("argv, words", [
    (["serve", "--host", "0.0.0.0"], "--allow-remote"),
    (["serve", "--host", "192.168.1.5", "--allow-remote", "--no-auth"], "--no-auth is refused"),
    (["serve", "--weights", "int9"], "--weights"),
])
def test_remote_binds_need_allow_remote_and_keys(argv, words, capsys):
    code, _, err = _cli(argv, capsys)
    assert code == 2 and words in err and err.count("\n") == 1


def test_loopback_hosts():
    from tunelab.cli.serve import check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    check_bind("127.0.0.1", False, True)  # --no-auth on loopback is fine
