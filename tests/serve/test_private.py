"""What the server writes is its own (folders 0700, files 0600: serve.db and its WAL, uploads, knowledge-base
documents), and keys never reach its logs (uvicorn's access log included)."""

from __future__ import annotations

import http.client
import logging
import os
import stat
import threading
import time

import pytest

from tests.serve.conftest import free_port
from tests.serve.test_guard import TRAIN, FakePool, _state, multipart, send


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_private_dir_and_files(tmp_path):
    from tunelab.serve.private import open_private, private_dir, write_private

    old = os.umask(0o022)
    try:
        d = private_dir(tmp_path / "a" / "b" / "c")
        assert [mode(tmp_path / x) for x in ("a", "a/b", "a/b/c")] == [0o700] * 3
        (tmp_path / "open").mkdir(mode=0o755)
        private_dir(tmp_path / "open")
        assert mode(tmp_path / "open") == 0o700
        write_private(d / "f", b"x")
        assert mode(d / "f") == 0o600
        (d / "g").write_bytes(b"old")
        os.chmod(d / "g", 0o644)
        with open_private(d / "g") as f:
            f.write(b"new")
        assert mode(d / "g") == 0o600 and (d / "g").read_bytes() == b"new"
    finally:
        os.umask(old)


def test_serve_db_and_uploads_are_private(tmp_path):
    from tests.serve.conftest import start_server

    old = os.umask(0o022)  # what a user's shell usually has: files 0644 unless the server says otherwise
    try:
        state = _state(tmp_path, auth=False)
        with start_server(state, pool=FakePool(), extra_modules=("tunelab.serve.files_api",)) as srv:
            body, ctype = multipart({"purpose": "fine-tune"}, {"file": ("t.jsonl", TRAIN)})
            status, f = send(srv.port, "POST", "/v1/files", body, {"Content-Type": ctype})
            assert status == 200, f
            assert mode(state.home) == 0o700 and mode(state.db_path) == 0o600
            assert mode(state.files_dir) == 0o700 and mode(state.files_dir / f["id"]) == 0o600
            for side in ("-wal", "-shm"):
                p = state.db_path.with_name(state.db_path.name + side)
                if p.exists():
                    assert mode(p) == 0o600, side
    finally:
        os.umask(old)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def test_keys_in_query_parameters_do_not_reach_the_access_log(tmp_path):
    import uvicorn

    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key

    state = _state(tmp_path, auth=True)
    key = create_key(state.db_path, "alice")[1]
    app = create_app(state, extra_modules=[], pool=FakePool())
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", access_log=True))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    lines = _Lines()
    access = logging.getLogger("uvicorn.access")
    try:
        deadline = time.monotonic() + 60
        while not srv.started:
            assert th.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        access.addHandler(lines)
        for q in (f"api_key={key}", f"key={key}&limit=2", f"x=1&access_token={key}", f"token=s3cr3t-value"):
            status, _ = send(port, "GET", f"/v1/models?{q}")
            assert status == 401  # a key is read from the Authorization header only
        assert send(port, "GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})[0] == 200
        deadline = time.monotonic() + 10
        while len(lines.lines) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        access.removeHandler(lines)
        srv.should_exit = True
        th.join(15)
        access.setLevel(logging.WARNING)
    text = "\n".join(lines.lines)
    assert len(lines.lines) >= 5 and "/v1/models?api_key=***" in text, text
    assert key not in text and key[3:] not in text and "s3cr3t" not in text, text
