"""Fixtures of the server tests: a few-second LoRA run on the tiny Llama, tenants with keys, and a
real server (uvicorn in a thread, 127.0.0.1, a free port) that the official `openai` client talks to.

    serve_env    session: folders, the trained run "tuned" (tenant alice), keys of alice and bob
    server       session: the running server (auth on) -> Server(url, port, state, pool, keys)
    server_factory -> start_server(state, pool=None, extra_modules=()): a context manager, another server
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from dataclasses import dataclass

import pytest




@dataclass
class Server:
    url: str
    port: int
    state: object
    pool: object
    keys: dict

    def client(self, key: str | None = None, **kw):
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key or "none", max_retries=0, timeout=60, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def uvicorn_thread(app, what: str = "the test server", start_s: float = 60, stop_s: float = 15):
    """Serve the ASGI `app` on 127.0.0.1 at a free port in a thread; yields the port. Waits at most
    `start_s` for it to start and `stop_s` for it to stop."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + start_s
    while not srv.started:
        if not th.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        srv.should_exit = True
        th.join(stop_s)


@contextlib.contextmanager
def start_server(state, pool=None, extra_modules=(), keys=None):
    """Run create_app(state) under uvicorn in a thread until the block ends (bounded waits)."""
    from tunelab.serve.app import create_app

    app = create_app(state, extra_modules=list(extra_modules), pool=pool)
    with uvicorn_thread(app) as port:
        yield Server(f"http://127.0.0.1:{port}/v1", port, state, state.pool, keys or {})


@pytest.fixture(scope="session")
def serve_env(tmp_path_factory, tiny_model_dir, tiny_run):
    """home/ (keys db), runs/ with alice's run 'tuned' (and bob's own 'bobs'), the keys."""
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("serve")
    trained = tiny_run(tmp, "tuned", runs="trained")  # 3 steps, 16 train / 1 validation examples
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), max_adapters=2,
                       kb=tmp / "kb")
    alice, bob = state.tenant_runs("alice"), state.tenant_runs("bob")
    alice.mkdir(parents=True)
    bob.mkdir(parents=True)
    shutil.copytree(trained, alice / "tuned")
    shutil.copytree(trained, bob / "bobs")
    keys = {t: create_key(state.db_path, t)[1] for t in ("alice", "bob")}
    return {"tmp": tmp, "state": state, "keys": keys, "trained": trained, "model_dir": tiny_model_dir}


@pytest.fixture(scope="session")
def server_factory():
    """start_server, for tests that need another server (other state, same pool)."""
    return start_server


@pytest.fixture(scope="session")
def server(serve_env):
    with start_server(serve_env["state"], keys=serve_env["keys"]) as srv:
        yield srv
