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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter

from tunelab.serve import files_api, inference, jobs_api, studio


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
           "embeddings": inference.__name__, "files": files_api.__name__, "jobs": jobs_api.__name__,
           "studio": studio.__name__}

_JOBS = "/v1/fine_tuning/jobs"
ROUTES: list[Route] = [
    Route("GET", "/v1/models", "models", inference.list_models),
    Route("GET", "/v1/models/{model_id:path}", "models", inference.get_model),
    Route("POST", "/v1/chat/completions", "chat", inference.chat_completions, proxied=True),
    Route("POST", "/v1/completions", "completions", inference.completions, proxied=True),
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
    Route("GET", _JOBS + "/{job_id}/events", "jobs", jobs_api.list_events),
    Route("GET", _JOBS + "/{job_id}/checkpoints", "jobs", jobs_api.list_checkpoints),
    # the Studio's pages, fragments and JSON routes, as its routers declare them (serve/studio/)
    *(Route(m, path, "studio") for m, path, _ in mounted(studio.router.routes)),
]



def router(modules: list[str], proxy: Callable[[Route], Callable] | None = None) -> APIRouter:
    """The routes of the groups whose module is in `modules` (see the module docstring)."""
    out = APIRouter()
    for r in ROUTES:
        if r.module not in modules or r.endpoint is None:
            continue
        endpoint = proxy(r) if r.proxied and proxy is not None else None
        out.add_api_route(r.path, endpoint or r.endpoint, methods=[r.method])
    if studio.__name__ in modules:
        out.include_router(studio.router)
    return out
