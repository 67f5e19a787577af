"""The request guard: one ASGI middleware in front of every route (`app.add_middleware(RequestGuard, state=state)`).

Every refusal is an error in OpenAI's shape (serve/errors.py), sent before the route runs.

In every mode:
    body size      413 `request_too_large` for a body over its limit: `state.upload_limit` (64 MiB) on the
                   upload routes (UPLOAD_PATHS), `state.body_limit` (1 MiB) elsewhere. Content-Length is
                   checked before anything is read; a chunked body is counted as it arrives and cut off at
                   the limit, and the reply is the 413 even when the route turned the cut-off body into
                   an error of its own (a multipart parser's 400).
    JSON bodies    a body that is not a multipart upload is read whole (at most its limit) and, when it
                   parses as JSON, refused with a 400 `invalid_json` for nesting deeper than MAX_DEPTH (64),
                   an integer over Python's int-digit limit (`sys.get_int_max_str_digits()`), a string
                   holding a lone surrogate (no UTF-8 text can carry one: a tokenizer, a file name or the
                   database would fail on it) or bytes that are not UTF-8: the data readers' own checks
                   (data/sources.parse_json). A body that does not parse is left to the route's own 400.

Browser-facing requests (`protected`): with `--no-auth` every route, with keys the Studio's (every path
outside /v1/). A page of another site can make a browser send these, and with `--no-auth` no key
stops them:
    Host           when the connection arrived on a loopback address, the Host header must name the
                   server on loopback (localhost, 127.0.0.1, [::1], the address itself) with its port:
                   403 otherwise. This stops DNS rebinding (a foreign name that resolves to 127.0.0.1).
    Origin         when present, it must be this server's own origin (scheme://Host): 403 otherwise.
    Content-Type   POST, PUT, PATCH and DELETE with a body or a Content-Type need `application/json`, or
                   `multipart/form-data` on the upload routes: 415 otherwise (a cross-site form or a
                   `text/plain` fetch can send neither without a CORS preflight, which this server
                   never grants).

Keys never reach the logs: `RedactKeys`, a filter on uvicorn's access and error loggers and on
tunelab.serve's, replaces a key (`tl-...`) anywhere in a line, and the value of any query parameter
whose name holds key, token, secret, password or auth, with `***` (a client that sends its key as
`?api_key=` is refused with a 401, but its request line is logged).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from tunelab.data.sources import parse_json
from tunelab.serve.errors import APIError

# The routes that take uploaded files (a dataset, a knowledge base's documents).
UPLOAD_PATHS = ("/v1/files", "/studio/api/kbs")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&;])[^=&;#\s\"]*(?:key|token|secret|password|auth)[^=&;#\s\"]*=)[^&;#\s\"]*")
_KEY = re.compile(r"tl-[A-Za-z0-9_\-]{6,}")
LOGGERS = ("uvicorn.access", "uvicorn.error", "tunelab.serve")


def redact(text: str) -> str:
    """`text` with keys and secret query values as `***` (the module docstring)."""
    return _KEY.sub("tl-***", _SECRET_PARAM.sub(r"\1***", text))


class RedactKeys(logging.Filter):
    """A logging filter: every string of a record (its message and arguments) through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


REDACT = RedactKeys()


def install_log_filter() -> None:
    """Put REDACT on the server's loggers (once each; uvicorn's dictConfig keeps a logger's filters)."""
    for name in LOGGERS:
        logging.getLogger(name).addFilter(REDACT)


def _error(status: int, message: str, code: str) -> JSONResponse:
    e = APIError(status, message, code=code)
    return JSONResponse(e.body(), status_code=status)


def is_upload(scope) -> bool:
    return scope["method"] == "POST" and scope["path"].rstrip("/") in UPLOAD_PATHS


def body_limit(state, scope) -> int:
    return state.upload_limit if is_upload(scope) else state.body_limit


def _media_type(headers: dict) -> str:
    raw = headers.get(b"content-type", b"").decode("latin-1")
    return raw.split(";", 1)[0].strip().lower()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """'name:port' / '[::1]:port' / 'name' -> (name lower-cased, port or None); ('', None) if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", None
        name, rest = value[: end + 1], value[end + 1:]
    else:
        name, sep, port = value.partition(":")
        rest = ":" + port if sep else ""
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return "", None
    return name, int(rest[1:])


def host_problem(scope, headers: dict) -> str | None:
    """Why the Host header does not name this loopback server (None: it does, or the server is not
    reached on loopback)."""
    server = scope.get("server") or (None, None)
    local, port = server[0], server[1]
    if not local or not is_loopback(str(local)):
        return None
    name, hport = _split_host(headers.get(b"host", b"").decode("latin-1"))
    default = 443 if scope.get("scheme") == "https" else 80
    names = {*LOOPBACK_NAMES, str(local).lower(), f"[{str(local).lower()}]"}
    if name in names and (hport or default) == port:
        return None
    return "this server answers only requests addressed to it on loopback (Host header)"


def origin_problem(scope, headers: dict) -> str | None:
    origin = headers.get(b"origin")
    if origin is None:
        return None
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    own = f"{scope.get('scheme', 'http')}://{host}"
    if origin.decode("latin-1").strip().lower().rstrip("/") == own:
        return None
    return "cross-origin requests are not allowed (Origin header)"


def content_type_problem(scope, headers: dict) -> str | None:
    if scope["method"] not in STATE_CHANGING:
        return None
    has_body = b"transfer-encoding" in headers or headers.get(b"content-length", b"0").strip() not in (b"", b"0")
    mt = _media_type(headers)
    if not mt and not has_body:
        return None
    if mt == "application/json" or (mt == "multipart/form-data" and is_upload(scope)):
        return None
    want = "application/json" + (" or multipart/form-data" if is_upload(scope) else "")
    return f"Content-Type must be {want}, not '{mt or 'none'}'"


def json_problem(body: bytes) -> str | None:
    """Why a JSON body is refused (the module docstring); None when it is fine or is not JSON at all
    (the route's own 400 says where)."""
    try:
        parse_json(body)
    except json.JSONDecodeError:
        return None
    except ValueError as e:
        return f"the request body is refused: {e}"
    return None


class _TooLarge(StarletteHTTPException):
    """Raised to the app when a streamed body passes its limit (FastAPI passes HTTPExceptions on as they are)."""

    def __init__(self):
        super().__init__(413, "request body over the limit")


class RequestGuard:
    """ASGI middleware: the checks of the module docstring, in front of `app`."""

    def __init__(self, app, state):
        self.app, self.state = app, state
        install_log_filter()

    def protected(self, scope) -> bool:
        return not getattr(self.state, "auth", True) or not scope["path"].startswith("/v1/")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers") or []:
            headers.setdefault(k.lower(), v)
        if self.protected(scope):
            for status, check, code in ((403, host_problem, "invalid_host"), (403, origin_problem, "cross_origin"),
                                        (415, content_type_problem, "unsupported_media_type")):
                if (problem := check(scope, headers)) is not None:
                    return await _error(status, problem, code)(scope, receive, send)
        limit = body_limit(self.state, scope)
        too_large = _error(413, f"request body over the limit of {limit} bytes", "request_too_large")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                if int(length) > limit:
                    return await too_large(scope, receive, send)
            except ValueError:
                pass
        if not is_upload(scope) or _media_type(headers) == "application/json":
            return await self._buffered(scope, receive, send, limit, too_large)
        return await self._streamed(scope, receive, send, limit, too_large)

    async def _buffered(self, scope, receive, send, limit, too_large):
        """Read the whole body (at most `limit`), check it as JSON, then hand it to the app in one piece."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip() and (problem := json_problem(body)) is not None:
            return await _error(400, problem, "invalid_json")(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _streamed(self, scope, receive, send, limit, too_large):
        """Pass the body through as it arrives, cut off past `limit`: then the reply is the 413, whatever
        the app made of the cut-off body."""
        seen, over, started = 0, False, False

        async def limited():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if over:  # the app's own reply to a body it could not finish reading: replaced by the 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await too_large(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except _TooLarge:
            if not started:
                await too_large(scope, receive, send)
        except Exception:
            if not over:
                raise
            if not started:
                await too_large(scope, receive, send)
