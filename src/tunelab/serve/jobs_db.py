"""The tables of the files and fine-tuning jobs API, and the OpenAI objects made from their rows.

    files(seq, id "file-…", tenant, bytes, created_at, filename, purpose, status, status_details,
          kind, data_columns)       kind: sft | preference | openai_dpo (what the data layer read);
                                    data_columns: the Studio's column mapping ({our field: the file's}),
                                    the job's `data.columns` (added to an older database by ALTERS)
    jobs(seq, id "ftjob-…", tenant, model, training_file, validation_file, method, hyperparameters,
         suffix, seed, metadata, status, run_name, fine_tuned_model, error, trained_tokens,
         created_at, started_at, finished_at, worker_pid, attempts)
    events(seq, id "ftevent-…", job_id, tenant, created_at, level, message, type, data)
    checkpoints(seq, id "ftckpt-…", job_id, tenant, step, created_at, name, metrics)

Every row has a tenant and every read names one: another tenant's id reads as an unknown id
(`errors.not_found`, a 404 that does not tell it exists). `seq` (INTEGER PRIMARY KEY) orders
lists; the cursor `after` of a list is an id of the same tenant. JSON columns hold text
(`json.dumps`). A status change is one conditional UPDATE (`set_job(..., only_if=...)`): a job
cancelled while its worker ends stays cancelled.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from tunelab.serve import db
from tunelab.serve.errors import APIError, not_found

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
        bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, filename TEXT NOT NULL,
        purpose TEXT NOT NULL, status TEXT NOT NULL, status_details TEXT, kind TEXT, data_columns TEXT)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
        model TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT,
        method TEXT NOT NULL, hyperparameters TEXT NOT NULL, suffix TEXT, seed INTEGER NOT NULL,
        metadata TEXT, status TEXT NOT NULL, run_name TEXT NOT NULL, fine_tuned_model TEXT,
        error TEXT, trained_tokens INTEGER, created_at INTEGER NOT NULL, started_at INTEGER,
        finished_at INTEGER, worker_pid INTEGER, attempts INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
        tenant TEXT NOT NULL, created_at INTEGER NOT NULL, level TEXT NOT NULL,
        message TEXT NOT NULL, type TEXT NOT NULL, data TEXT)""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
        tenant TEXT NOT NULL, step INTEGER NOT NULL, created_at INTEGER NOT NULL,
        name TEXT NOT NULL, metrics TEXT, UNIQUE(job_id, step))""",
    "CREATE INDEX IF NOT EXISTS files_tenant ON files(tenant, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq)",
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq)",
]

# columns added after a table was first made: (table, column, type), added when missing
ALTERS = [("files", "data_columns", "TEXT")]
_altered: set[str] = set()

ACTIVE = ("validating_files", "queued", "running", "paused")  # not ended: a paused job can be cancelled
TERMINAL = ("succeeded", "failed", "cancelled")
_JSON = ("method", "hyperparameters", "metadata", "error", "data", "metrics", "data_columns")


def conn(db_path: str | Path):
    """This thread's connection to the server database, with these tables."""
    c = db.connect(db_path)
    db.ensure_schema(c, SCHEMA)
    key = str(Path(db_path).resolve())
    if key not in _altered:
        with c:
            for table, column, kind in ALTERS:
                if column not in {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        _altered.add(key)
    return c


def new_id(prefix: str) -> str:
    """`prefix-` + 24 hex characters (96 random bits)."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def _row(r) -> dict | None:
    if r is None:
        return None
    d = dict(r)
    for k in _JSON:
        if k in d and isinstance(d[k], str):
            d[k] = json.loads(d[k])
    return d


def _dumps(v):
    return None if v is None else json.dumps(v)


def _insert(c, table: str, row: dict) -> None:
    row = {k: _dumps(v) if k in _JSON else v for k, v in row.items()}
    with c:
        c.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                  tuple(row.values()))


def _get(c, table: str, kind: str, tenant: str, ident: str, param: str | None = None) -> dict:
    r = c.execute(f"SELECT * FROM {table} WHERE id = ? AND tenant = ?", (ident, tenant)).fetchone()
    if r is None:
        raise not_found(kind, ident, param)
    return _row(r)


def page(c, table: str, where: str, args: tuple, after: str | None, limit: int, newest_first: bool = True,
         kind: str = "object") -> tuple[list[dict], bool]:
    """(rows, has_more): up to `limit` rows of `table` matching `where`, after the row `after`
    (an id matching `where` too, else a 404) in seq order, newest first unless told otherwise."""
    if not 1 <= limit <= 10000:
        raise APIError(400, f"limit must be between 1 and 10000, got {limit}", param="limit")
    order, cmp = ("DESC", "<") if newest_first else ("ASC", ">")
    sql, params = f"SELECT * FROM {table} WHERE {where}", list(args)
    if after:
        r = c.execute(f"SELECT seq FROM {table} WHERE {where} AND id = ?", (*args, after)).fetchone()
        if r is None:
            raise not_found(kind, after, "after")
        sql += f" AND seq {cmp} ?"
        params.append(r["seq"])
    rows = c.execute(f"{sql} ORDER BY seq {order} LIMIT ?", (*params, limit + 1)).fetchall()
    return [_row(r) for r in rows[:limit]], len(rows) > limit


def list_object(data: list[dict], has_more: bool) -> dict:
    """OpenAI's list envelope."""
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


# ---- files -----------------------------------------------------------------------------------------------
def insert_file(c, row: dict) -> None:
    _insert(c, "files", row)


def get_file(c, tenant: str, file_id: str, param: str | None = None) -> dict:
    return _get(c, "files", "file", tenant, file_id, param)


def set_file(c, tenant: str, file_id: str, **fields) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    with c:
        c.execute(f"UPDATE files SET {sets} WHERE id = ? AND tenant = ?",
                  (*(_dumps(v) if k in _JSON else v for k, v in fields.items()), file_id, tenant))


def delete_file(c, tenant: str, file_id: str) -> bool:
    with c:
        return c.execute("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant)).rowcount == 1


def file_object(r: dict) -> dict:
    return {"id": r["id"], "object": "file", "bytes": r["bytes"], "created_at": r["created_at"],
            "filename": r["filename"], "purpose": r["purpose"], "status": r["status"],
            "status_details": r["status_details"], "expires_at": None}


# ---- jobs ------------------------------------------------------------------------------------------------
def insert_job(c, row: dict) -> None:
    _insert(c, "jobs", row)


def get_job(c, tenant: str, job_id: str) -> dict:
    return _get(c, "jobs", "job", tenant, job_id)


def job_by_id(c, job_id: str) -> dict | None:
    """A job whatever its tenant (the runner and the worker, never a request)."""
    return _row(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def jobs_with_status(c, *statuses: str) -> list[dict]:
    """Every tenant's jobs in these statuses, oldest first (the queue order)."""
    marks = ", ".join("?" * len(statuses))
    return [_row(r) for r in c.execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses)]


def set_job(c, job_id: str, only_if: tuple[str, ...] | None = None, **fields) -> bool:
    """Update a job's fields, only while its status is one of `only_if` (when given); True if it did."""
    with c:
        return _update(c, job_id, only_if, fields)


def transition(c, job: dict, status: str, only_if: tuple[str, ...], message: str, level: str = "info",
               **fields) -> bool:
    """Move `job` to `status` if its status is one of `only_if`, and record `message` as its event, in one
    transaction (a stream that sees the status sees the event); True if it moved."""
    with c:
        if not _update(c, job["id"], only_if, {"status": status, **fields}):
            return False
        c.execute("INSERT INTO events (id, job_id, tenant, created_at, level, message, type, data) "
                  "VALUES (?, ?, ?, ?, ?, ?, 'message', '{}')",
                  (new_id("ftevent"), job["id"], job["tenant"], now(), level, message))
    return True


def _update(c, job_id: str, only_if, fields: dict) -> bool:
    sets = ", ".join(f"{k} = ?" for k in fields)
    args = [_dumps(v) if k in _JSON else v for k, v in fields.items()] + [job_id]
    sql = f"UPDATE jobs SET {sets} WHERE id = ?"
    if only_if:
        sql += f" AND status IN ({', '.join('?' * len(only_if))})"
        args += list(only_if)
    return c.execute(sql, args).rowcount == 1


# ---- events ----------------------------------------------------------------------------------------------
def add_event(c, job: dict, message: str, level: str = "info", type: str = "message",
              data: dict | None = None) -> None:
    _insert(c, "events", {"id": new_id("ftevent"), "job_id": job["id"], "tenant": job["tenant"],
                          "created_at": now(), "level": level, "message": message, "type": type,
                          "data": data or {}})


def events_since(c, job_id: str, seq: int) -> list[dict]:
    """A job's events after `seq`, oldest first (the SSE stream)."""
    return [_row(r) for r in c.execute("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
                                       (job_id, seq))]


def metric_steps(c, job_id: str) -> set[tuple[int, str]]:
    """(step, "train" | "valid") of the job's metrics events so far (a resumed worker skips them)."""
    out = set()
    for r in c.execute("SELECT data FROM events WHERE job_id = ? AND type = 'metrics'", (job_id,)):
        d = json.loads(r["data"] or "{}")
        out.add((int(d.get("step", 0)), "train" if "train_loss" in d else "valid"))
    return out


def checkpoint_steps_recorded(c, job_id: str) -> set[int]:
    return {r["step"] for r in c.execute("SELECT step FROM checkpoints WHERE job_id = ?", (job_id,))}


def event_object(r: dict) -> dict:
    return {"id": r["id"], "object": "fine_tuning.job.event", "created_at": r["created_at"], "level": r["level"],
            "message": r["message"], "type": r["type"], "data": r["data"]}


# ---- checkpoints -----------------------------------------------------------------------------------------
def add_checkpoint(c, job: dict, step: int, metrics: dict) -> bool:
    """Record the checkpoint of `step` once (a second call for the same step does nothing); True if new."""
    with c:
        cur = c.execute("INSERT OR IGNORE INTO checkpoints (id, job_id, tenant, step, created_at, name, metrics) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (new_id("ftckpt"), job["id"], job["tenant"], step, now(),
                         f"{job['run_name']}:step-{step}", json.dumps(metrics)))
    return cur.rowcount == 1


def checkpoint_object(r: dict) -> dict:
    return {"id": r["id"], "object": "fine_tuning.job.checkpoint", "created_at": r["created_at"],
            "fine_tuned_model_checkpoint": r["name"], "fine_tuning_job_id": r["job_id"],
            "metrics": {"step": r["step"], **(r["metrics"] or {})}, "step_number": r["step"]}
