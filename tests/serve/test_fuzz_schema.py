"""schemathesis against the server's own OpenAPI schema (`app.openapi()`: the routes' pydantic models), every
route, with keys and with `--no-auth`, through a real server on the tiny Llama: no response is a 5xx.

A short run here (FEW examples a route); the `slow` run (`pytest -m slow tests/serve/test_fuzz_schema.py`)
draws MANY. Not fuzzed: the export (it converts and quantizes a whole model per call).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.serve.test_guard import MODULES  # noqa: E402

FEW, MANY = 8, 200
SKIP = {("POST", "/studio/api/runs/{name}/export"): "a whole model exported per call"}


def _state(serve_env, tmp_path, auth: bool):
    from tunelab.serve.state import ServeState

    base = serve_env["state"]
    state = ServeState(home=tmp_path / "home", runs=base.runs, base=base.base, auth=auth, kb=tmp_path / "kb",
                       max_tokens_cap=4,  # a few tokens a reply: the fuzzer checks answers, not decoding
                       rate_per_minute=0)  # thousands of requests a minute
    state.jobs_max_concurrent = 0
    return state


def _operations(app):
    schema = schemathesis.openapi.from_dict(app.openapi())
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in SKIP:
            yield op


def _fuzz(srv, app, headers: dict, examples: int, statuses: dict) -> list[str]:
    failures = []
    for op in _operations(app):
        seen = []
        got = statuses.setdefault(f"{op.method.upper()} {op.path}", set())

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def one(case):
            resp = case.call(base_url=f"http://127.0.0.1:{srv.port}", headers=headers, timeout=60)
            got.add(resp.status_code)
            if resp.status_code >= 500:
                seen.append(f"{op.method.upper()} {op.path}: {resp.status_code} for {case.path_parameters} "
                            f"{case.query} {str(case.body)[:200]!r}: {resp.text[:200]}")

        one()
        failures += seen[:3]
    return failures


@pytest.mark.parametrize("auth", [True, False], ids=["keys", "no-auth"])
def test_no_route_answers_a_server_error(server, serve_env, server_factory, tmp_path, auth):
    _run(server, serve_env, server_factory, tmp_path, auth, FEW)


@pytest.mark.slow
@pytest.mark.parametrize("auth", [True, False], ids=["keys", "no-auth"])
def test_no_route_answers_a_server_error_many(server, serve_env, server_factory, tmp_path, auth):
    _run(server, serve_env, server_factory, tmp_path, auth, MANY)


def _run(server, serve_env, server_factory, tmp_path, auth, examples):
    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key

    state = _state(serve_env, tmp_path, auth)
    headers = {"Authorization": f"Bearer {create_key(state.db_path, 'alice')[1]}"} if auth else {}
    with server_factory(state, pool=server.pool, extra_modules=MODULES) as srv:
        app = create_app(state, extra_modules=list(MODULES), pool=server.pool)  # its schema only
        statuses: dict[str, set] = {}
        failures = _fuzz(srv, app, headers, examples, statuses)
    assert not failures, "\n".join(failures)
    # the requests reach the routes: not all stopped at the door (401, 403, 415, 429)
    reached = [op for op, codes in statuses.items() if codes - {401, 403, 415, 429}]
    assert len(reached) == len(statuses), sorted((op, codes) for op, codes in statuses.items() if op not in reached)
    assert sum(1 for codes in statuses.values() if any(200 <= c < 300 for c in codes)) >= len(statuses) // 2, statuses
