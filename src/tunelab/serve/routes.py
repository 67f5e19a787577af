"""The route registry: every route the server mounts, one `Route` each, in one list.

    Route(method, path, group, endpoint, proxied)
        group      the serving group that answers it (models, chat, completions, embeddings, files,
                   jobs, studio); a group belongs to one MODULE, whose `startup` / `shutdown` run
                   with the app when the group is mounted
        endpoint   the thin route function (it declares its request and response models); None for
                   the Studio's routes, which its own routers mount (HTML pages and fragments)
        proxied    with `--engine vllm`, forwarded to vLLM after tunelab's auth (serve/vllm.py
                   reads this list to build its proxy)

`router(modules, proxy)` builds the APIRouter of the groups whose module is in `modules`; with
`proxy(route)` (serve/vllm.py), the proxied routes get its endpoint instead of tunelab's own. Adding a route group: its
models in serve/protocol/<group>.py, its serving class and thin routes in serve/<group>.py, its lines
here (and its module in app.EXTRA_MODULES when it is optional).

The error replies every route can give are declared here once, ERRORS (an OpenAI error body,
protocol/common.ErrorResponse), on every route the registry mounts; `openapi_schema(app)` is the
app's schema with FastAPI's default 422 left out (the server never sends one: a request that fails
validation is a 400, serve/app.py) and the 200s that are not JSON (SSE streams, file bytes, the
Studio's static files) declared as sent (CONTENT). tests/serve/test_fuzz_schema.py holds every reply to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter

from tunelab.serve import files_api, graders_api, inference, jobs_api, responses, studio
from tunelab.serve.protocol.common import ErrorResponse


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    group: str
    endpoint: Callable | None = None
    proxied: bool = False

    @property
    def module(self) -> str:
        return MODULES[self.group]


def mounted(routes) -> list[tuple[str, str, Callable]]:
    """(method, path, endpoint) of every route in `routes` (a router's or an app's), included routers
    opened (FastAPI keeps an included router as one entry)."""
    out = []
    for r in routes:
        if hasattr(r, "original_router"):
            out += mounted(r.original_router.routes)
        elif getattr(r, "methods", None):
            out += [(m, r.path, r.endpoint) for m in sorted(r.methods) if m != "HEAD"]
    return out


MODULES = {"models": inference.__name__, "chat": inference.__name__, "completions": inference.__name__,
           "responses": inference.__name__,  # mounted with the inference routes; its endpoint is serve/responses.py's
           "embeddings": inference.__name__, "files": files_api.__name__, "jobs": jobs_api.__name__,
           "studio": studio.__name__,
           "graders": inference.__name__}  # mounted with the inference routes; the endpoints are serve/graders_api.py's

_JOBS = "/v1/fine_tuning/jobs"
ROUTES: list[Route] = [
    Route("GET", "/v1/models", "models", inference.list_models),
    Route("GET", "/v1/models/{model_id:path}", "models", inference.get_model),
    Route("DELETE", "/v1/models/{model_id:path}", "models", inference.delete_model),
    Route("POST", "/v1/chat/completions", "chat", inference.chat_completions, proxied=True),
    Route("POST", "/v1/completions", "completions", inference.completions, proxied=True),
    Route("POST", "/v1/responses", "responses", responses.create_response),
    Route("POST", "/v1/embeddings", "embeddings", inference.embeddings, proxied=True),
    Route("POST", "/v1/files", "files", files_api.create_file),
    Route("GET", "/v1/files", "files", files_api.list_files),
    Route("GET", "/v1/files/{file_id}", "files", files_api.retrieve_file),
    Route("GET", "/v1/files/{file_id}/content", "files", files_api.file_content),
    Route("DELETE", "/v1/files/{file_id}", "files", files_api.delete_file),
    Route("POST", _JOBS, "jobs", jobs_api.create_job),
    Route("GET", _JOBS, "jobs", jobs_api.list_jobs),
    Route("GET", _JOBS + "/{job_id}", "jobs", jobs_api.retrieve_job),
    Route("POST", _JOBS + "/{job_id}/cancel", "jobs", jobs_api.cancel_job),
    Route("POST", _JOBS + "/{job_id}/pause", "jobs", jobs_api.pause_job),
    Route("POST", _JOBS + "/{job_id}/resume", "jobs", jobs_api.resume_job),
    Route("GET", _JOBS + "/{job_id}/events", "jobs", jobs_api.list_events),
    Route("GET", _JOBS + "/{job_id}/checkpoints", "jobs", jobs_api.list_checkpoints),
    Route("POST", "/v1/fine_tuning/alpha/graders/run", "graders", graders_api.run_grader_route),
    Route("POST", "/v1/fine_tuning/alpha/graders/validate", "graders", graders_api.validate_grader_route),
    # the Studio's pages, fragments and JSON routes, as its routers declare them (serve/studio/)
    *(Route(m, path, "studio") for m, path, _ in mounted(studio.router.routes)),
]



def _error(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


# What any route may answer besides its success, whatever its own code does (serve/guard.py, serve/auth.py,
# serve/app.py's handlers): with these, a reply outside a route's schema is a defect.
ERRORS: dict[int | str, dict] = {
    400: _error("invalid request: a parameter or body the route refuses, invalid JSON (invalid_request_error)"),
    401: _error("missing or unknown API key (authentication_error)"),
    403: _error("a foreign Host or Origin on a browser-facing request (permission_error)"),
    404: _error("no such object, or another tenant's; an unknown route (invalid_request_error)"),
    409: _error("the object's state does not allow it (invalid_request_error)"),
    413: _error("request body over its limit (invalid_request_error)"),
    415: _error("a state-changing request that is not application/json (invalid_request_error)"),
    429: _error("rate limit reached (rate_limit_error)"),
}


_BYTES = {"schema": {"type": "string", "format": "binary"}}
# The success replies that are not the route's JSON model (FastAPI declares application/json for them):
# (method, path): the media types its 200 may have, as the route sends them.
CONTENT: dict[tuple[str, str], dict] = {
    ("POST", "/v1/chat/completions"): {"text/event-stream": {"schema": {"type": "string"}}},  # stream=true
    ("POST", "/v1/completions"): {"text/event-stream": {"schema": {"type": "string"}}},
    ("POST", "/v1/responses"): {"text/event-stream": {"schema": {"type": "string"}}},
    ("GET", "/v1/files/{file_id}/content"): {"application/octet-stream": _BYTES},  # only
    ("GET", "/studio/static/{name}"): {"text/javascript": {"schema": {"type": "string"}},
                                       "text/css": {"schema": {"type": "string"}}},  # only
    ("GET", "/studio/api/runs/{name}/download/{folder}/{file}"): {"application/octet-stream": _BYTES},  # only
}
_ONLY = {("GET", "/v1/files/{file_id}/content"), ("GET", "/studio/static/{name}"),
         ("GET", "/studio/api/runs/{name}/download/{folder}/{file}")}  # no JSON 200 at all


def openapi_schema(app) -> dict:
    """The app's OpenAPI schema (cached on the app as FastAPI does), without FastAPI's default 422 and its
    validation-error models (validation failures are answered 400), with ERRORS as JSON on every route,
    the Studio's HTML pages included, and CONTENT's media types on the 200s that are not (only) JSON."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path, ops in schema.get("paths", {}).items():
            for method, op in ops.items():
                responses = op.get("responses", {})
                responses.pop("422", None)
                key = (method.upper(), path)
                if key in CONTENT and "200" in responses:
                    content = {} if key in _ONLY else responses["200"].get("content", {})
                    responses["200"]["content"] = {**content, **CONTENT[key]}
                for status in map(str, ERRORS):  # JSON on an HTML page's route too (FastAPI gives it text/html)
                    if status in responses:
                        responses[status]["content"] = dict(error)
        comps = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            comps.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def router(modules: list[str], proxy: Callable[[Route], Callable] | None = None) -> APIRouter:
    """The routes of the groups whose module is in `modules` (see the module docstring)."""
    out = APIRouter()
    for r in ROUTES:
        if r.module not in modules or r.endpoint is None:
            continue
        endpoint = proxy(r) if r.proxied and proxy is not None else None
        out.add_api_route(r.path, endpoint or r.endpoint, methods=[r.method], responses=ERRORS)
    if studio.__name__ in modules:
        out.include_router(studio.router, responses=ERRORS)
    return out
