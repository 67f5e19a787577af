"""schemathesis against the server's own OpenAPI schema (`app.openapi()`: the routes' pydantic models), every
route, with keys and with `--no-auth`, through a real server on the tiny Llama: no response is a 5xx, and every
response is one the schema declares (its status, its content type, its body: schemathesis' status-code,
content-type and response-schema conformance checks). The error replies are declared once for every route
(serve/routes.ERRORS, OpenAI's error body); FastAPI's default 422 is left out, as the server never sends it.

A short run here (FEW examples a route); the `slow` run (`pytest -m slow tests/serve/test_fuzz_schema.py`)
draws MANY. The Studio's export is fuzzed too, but never on a run that exists (it converts and quantizes a
whole model per call): a case naming one of the runs' folders is passed over, so its answers are the refusals
(no JSON body, a bad name, no such run).
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serve.test_guard import MODULES  # noqa: E402

FEW, MANY = 8, 200
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXPORT = ("POST", "/studio/api/runs/{name}/export")
# never called on a run that exists (the parameter naming it): the export converts a whole model, the
# DELETE removes the session's run
GUARDED = {EXPORT: "name", ("DELETE", "/v1/models/{model_id}"): "model_id"}
# can succeed only on a job in one state (running, paused), which no fuzzed request makes
NEEDS_STATE = {("POST", "/v1/fine_tuning/jobs/{job_id}/pause"), ("POST", "/v1/fine_tuning/jobs/{job_id}/resume")}


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
        yield result.ok()


def _fuzz(srv, app, headers: dict, examples: int, statuses: dict, runs: set[str]) -> list[str]:
    failures = []
    for op in _operations(app):
        seen = []
        got = statuses.setdefault(f"{op.method.upper()} {op.path}", set())

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def one(case):
            guard = GUARDED.get((op.method.upper(), op.path))
            if guard and unquote(str(case.path_parameters.get(guard))) in runs:
                return  # an existing run: a whole export, or its deletion
            resp = case.call(base_url=f"http://127.0.0.1:{srv.port}", headers=headers, timeout=60)
            got.add(resp.status_code)
            try:
                case.validate_response(resp, checks=CHECKS)
            except (FailureGroup, AssertionError) as e:  # the checks' failures
                seen.append(f"{op.method.upper()} {op.path}: {resp.status_code} {resp.headers.get('content-type')} "
                            f"for {case.path_parameters} {case.query} {str(case.body)[:200]!r}: {resp.text[:200]}\n"
                            f"  {str(e).strip()[:600]}")

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
        runs = {p.name for p in state.runs.rglob("*") if p.is_dir()}
        failures = _fuzz(srv, app, headers, examples, statuses, runs)
    assert not failures, "\n".join(failures)
    # the requests reach the routes: not all stopped at the door (401, 403, 415, 429)
    reached = [op for op, codes in statuses.items() if codes - {401, 403, 415, 429}]
    assert len(reached) == len(statuses), sorted((op, codes) for op, codes in statuses.items() if op not in reached)
    # and half of them succeed at least once (not the guarded ones: never run on a real run, above; not the
    # ones that need a job in a given state)
    succeeding = {op: codes for op, codes in statuses.items()
                  if op not in {" ".join(k) for k in (*GUARDED, *NEEDS_STATE)}}
    assert sum(1 for codes in succeeding.values() if any(200 <= c < 300 for c in codes)) >= len(succeeding) // 2, statuses
