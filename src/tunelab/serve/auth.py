"""API keys, tenants and the per-key rate limit.

A key is `tl-` + 43 url-safe base64 characters (32 random bytes). It is shown once, when made
(`tunelab serve keys create --tenant NAME`); the database keeps only

    keys(id TEXT PRIMARY KEY,      -- "key_" + 12 hex, what `keys list` / `keys revoke` name
         tenant TEXT, hash TEXT UNIQUE,  -- hash = sha256(key) in hex
         prefix TEXT,              -- the key's first 7 characters, to tell keys apart in a list
         created INTEGER, revoked INTEGER NULL)   -- unix seconds

`current_tenant(request)` is the FastAPI dependency of every route: `Authorization: Bearer <key>`
-> the key's tenant; a missing, unknown or revoked key is a 401 in OpenAI's shape. With
`state.auth` False (`--no-auth`, loopback only) every request is tenant DEFAULT_TENANT and no
limit applies. Each key may make at most `state.rate_per_minute` requests in any 60 s window
(0: no limit); request number rate+1 inside the window gets a 429 with a Retry-After.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from starlette.requests import Request

from tunelab.serve import db
from tunelab.serve.errors import APIError
from tunelab.serve.names import check_name
from tunelab.serve.state import DEFAULT_TENANT

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
        created INTEGER NOT NULL, revoked INTEGER)""",
    "CREATE INDEX IF NOT EXISTS keys_tenant ON keys(tenant)",
]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _conn(db_path: str | Path):
    conn = db.connect(db_path)
    db.ensure_schema(conn, SCHEMA)
    return conn


def check_tenant(name: str) -> str:
    """A tenant name is a NAME (serve/names.py): it becomes the folder runs/.tenants/<name>."""
    from tunelab.errors import TunelabError

    try:
        return check_name(name, "tenant")
    except APIError as e:
        raise TunelabError(e.message, where="serve keys") from None


def create_key(db_path: str | Path, tenant: str) -> tuple[str, str]:
    """Make a key for `tenant`: returns (id, key). Only sha256(key) is stored."""
    check_tenant(tenant)
    key = "tl-" + secrets.token_urlsafe(32)
    kid = "key_" + secrets.token_hex(6)
    conn = _conn(db_path)
    with conn:
        conn.execute("INSERT INTO keys(id, tenant, hash, prefix, created) VALUES (?, ?, ?, ?, ?)",
                     (kid, tenant, _hash(key), key[:7], int(time.time())))
    return kid, key


def list_keys(db_path: str | Path) -> list[dict]:
    """Every key (revoked ones too), oldest first: id, tenant, prefix, created, revoked."""
    rows = _conn(db_path).execute(
        "SELECT id, tenant, prefix, created, revoked FROM keys ORDER BY created, id").fetchall()
    return [dict(r) for r in rows]


def revoke_key(db_path: str | Path, kid: str) -> bool:
    """Revoke key `kid` (it stays listed). False if there is no such key or it was revoked already."""
    conn = _conn(db_path)
    with conn:
        cur = conn.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                           (int(time.time()), kid))
    return cur.rowcount == 1


def tenant_of(db_path: str | Path, key: str) -> str | None:
    """The tenant of a live key, None for an unknown or revoked one."""
    row = _conn(db_path).execute("SELECT tenant FROM keys WHERE hash = ? AND revoked IS NULL",
                                 (_hash(key),)).fetchone()
    return row["tenant"] if row else None


class RateLimiter:
    """At most `rate` hits per `window` seconds for each identity (a sliding window of timestamps):
    hit number rate+1 inside the window is refused until the oldest one leaves it."""

    def __init__(self, rate: int, window: float = 60.0):
        self.rate, self.window = rate, window
        self._hits: dict[str, deque] = {}
        self._lock = threading.Lock()

    def hit(self, ident: str, now: float | None = None) -> float:
        """Count a hit; 0.0 if allowed, else the seconds until one would be allowed (not counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._hits.setdefault(ident, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if self.rate > 0 and len(q) >= self.rate:
                return max(q[0] + self.window - now, 0.001)  # the oldest hit leaves the window then
            q.append(now)
            return 0.0


def _limiter(state) -> RateLimiter:
    lim = state.rate_limiter
    if lim is None or lim.rate != state.rate_per_minute:
        lim = state.rate_limiter = RateLimiter(state.rate_per_minute)
    return lim


def _bearer(request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_tenant(request: Request) -> str:
    """FastAPI dependency: the caller's tenant (see the module docstring); raises APIError 401/429."""
    state = request.app.state.tl
    if not state.auth:
        request.state.tenant = DEFAULT_TENANT
        return DEFAULT_TENANT
    key = _bearer(request)
    if key is None:
        raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>' "
                            "(make one with `tunelab serve keys create --tenant NAME`)",
                       code="missing_api_key")
    tenant = tenant_of(state.db_path, key)
    if tenant is None:
        raise APIError(401, "Incorrect API key provided (unknown or revoked)", code="invalid_api_key")
    ident = _hash(key)
    wait = _limiter(state).hit(ident)
    if wait:
        err = APIError(429, f"Rate limit reached: {state.rate_per_minute} requests per minute; "
                            f"retry in {wait:.1f} s", code="rate_limit_exceeded")
        err.headers = {"Retry-After": str(int(wait) + 1)}
        raise err
    request.state.tenant = tenant
    return tenant

