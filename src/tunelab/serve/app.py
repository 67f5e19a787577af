"""The FastAPI application: routes, OpenAI-shaped errors, the body-size limit, startup and shutdown.

    app = create_app(state)             # state: AppState (serve/state.py); app.state.tl = state

The routes are serve/routes.py's registry (thin functions over the serving classes, their request
and response models in serve/protocol/).

Every error is `{"error": {"message", "type", "param", "code"}}` (serve/errors.py):
    APIError                          its own status (400, 401, 404, 413, 429, ...)
    request validation, invalid JSON  400 invalid_request_error, `param` = the field's path
    unknown route / method            404 / 405
    body over the limit, bad JSON,    413 / 400 / 403 / 415 from the request guard (serve/guard.py), before
    a foreign Host or Origin, ...     any route runs
    anything else                     500 server_error, "internal server error" (the traceback
                                      goes to the log, not to the client)
No CORS headers are sent (browsers on other origins cannot call the server), no /docs.

Lifespan: the model pool (state.pool, serve/model_pool.py) is created at startup unless one is
there already, or unless state.upstream is a vLLM server (serve/vllm.py): then its process starts
and stops with the app and the routes the registry marks `proxied` are forwarded to it. Each module
of `extra_modules` mounts its groups of the registry and may define `startup(state)` / `shutdown(state)`.
"""

from __future__ import annotations

import importlib
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.serve import db, inference, routes
from tunelab.serve.auth import SCHEMA as KEYS_SCHEMA
from tunelab.serve.errors import APIError
from tunelab.serve.guard import RequestGuard

EXTRA_MODULES = ["tunelab.serve.files_api", "tunelab.serve.jobs_api", "tunelab.serve.studio"]  # studio: the web UI at /
log = logging.getLogger("tunelab.serve")


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=getattr(e, "headers", None))


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "literal"}


def _param(loc) -> str | None:
    """The field's path, e.g. messages.0.content (pydantic's union member tags such as `str` or
    `list[TextPart]` dropped)."""
    parts = []
    for p in loc:
        if p in ("body", "query", "path", "header"):
            continue
        if isinstance(p, int) or (re.fullmatch(r"[A-Za-z_]\w*", str(p)) and str(p) not in _TYPE_TAGS):
            parts.append(str(p))
        else:
            break
    return ".".join(parts) or None


def _validation(exc: RequestValidationError) -> APIError:
    """400 naming the first invalid field; for a union (a string or a list ...) every way it failed."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return APIError(400, "the request body is not valid JSON"
                        + (f" ({first.get('ctx', {}).get('error')})" if first.get("ctx") else ""),
                        code="invalid_json")
    param = _param(first.get("loc", ()))
    if first.get("type") == "missing":
        return APIError(400, f"missing required parameter '{param}'", param=param, code="missing_required_parameter")
    msgs = list(dict.fromkeys(e.get("msg", "invalid") for e in errors if _param(e.get("loc", ())) == param))
    msg = "; or ".join(msgs[:3]) or "invalid request"
    return APIError(400, f"invalid '{param}': {msg}" if param else msg, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return _error(_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        status = exc.status_code
        if status == 404:
            e = APIError(404, f"Unknown route: {request.method} {request.url.path}", code="unknown_route")
        elif status == 405:
            e = APIError(405, f"Method {request.method} is not allowed on {request.url.path}",
                         code="method_not_allowed", type="invalid_request_error")
        elif status == 413:
            e = APIError(413, str(exc.detail), code="request_too_large")
        elif status == 400:  # FastAPI: "There was an error parsing the body"
            e = APIError(400, str(exc.detail), code="invalid_body")
        else:
            e = APIError(status, str(exc.detail), type=None if status < 500 else "server_error")
        resp = _error(e)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(APIError(500, "internal server error", code="server_error"))


def create_app(state, extra_modules: list[str] | None = None, pool=None) -> FastAPI:
    """The server for `state`; `pool` injects a ready ModelPool (else one is built at startup)."""
    modules = [importlib.import_module(m) for m in (EXTRA_MODULES if extra_modules is None else extra_modules)]
    if pool is not None:
        state.pool = pool

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from starlette.concurrency import run_in_threadpool

        state.home.mkdir(parents=True, exist_ok=True)
        db.ensure_schema(db.connect(state.db_path), KEYS_SCHEMA)
        upstream = state.upstream
        own_pool = upstream is None and state.pool is None
        if upstream is not None:
            await run_in_threadpool(upstream.start)
        if own_pool:
            from tunelab.serve.model_pool import ModelPool

            state.pool = await run_in_threadpool(ModelPool, state)
        for mod in modules:
            if hasattr(mod, "startup"):
                mod.startup(state)
        try:
            yield
        finally:
            for mod in reversed(modules):
                if hasattr(mod, "shutdown"):
                    try:
                        mod.shutdown(state)
                    except Exception:  # one module's shutdown must not keep the others from theirs
                        log.exception("shutdown of %s failed", mod.__name__)
            if own_pool:
                pool, state.pool = state.pool, None
                pool.close()
            if upstream is not None:
                upstream.stop()

    app = FastAPI(title="tunelab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tl = state
    install_error_handlers(app)
    router = routes.router
    if state.upstream is not None:
        from tunelab.serve.vllm import router
    app.include_router(router([inference.__name__] + [m.__name__ for m in modules]))
    app.add_middleware(RequestGuard, state=state)  # body limits, JSON checks, Host/Origin/Content-Type
    app.openapi = lambda: routes.openapi_schema(app)  # the registry's errors declared, no 422 (serve/routes.py)
    return app
