"""The server's SQLite database: `$TUNELAB_HOME/serve/serve.db` (or the state's home), WAL mode.

The database and its folder are the server's own (0600, 0700: serve/private.py).
One connection per thread (`connect(path)`), autocommit off: a write is a `with conn:` block, so
it commits whole or not at all. Each module that owns tables declares its schema as a list of
`CREATE TABLE IF NOT EXISTS` statements and calls `ensure_schema(conn, statements)` once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from tunelab.serve.private import FILE_MODE, private_dir

_local = threading.local()


def connect(path: str | Path) -> sqlite3.Connection:
    """This thread's connection to `path` (created with WAL, foreign keys on, 10 s busy timeout)."""
    key = str(Path(path).resolve())
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    conn = conns.get(key)
    if conn is None:
        private_dir(Path(path).parent)
        if not Path(key).exists():  # made 0600 before SQLite opens it: its -wal and -shm files take that mode
            os.close(os.open(key, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        conn = sqlite3.connect(key, timeout=10, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        conns[key] = conn
    return conn


def ensure_schema(conn: sqlite3.Connection, statements: list[str]) -> None:
    with conn:
        for sql in statements:
            conn.execute(sql)


def close_all() -> None:
    """Close this thread's connections (tests, shutdown)."""
    for conn in getattr(_local, "conns", {}).values():
        conn.close()
    _local.conns = {}
