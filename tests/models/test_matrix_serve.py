"""The architecture matrix, serving side: per family, the app `tunelab serve` runs (one base per server:
tiny-<family>, --no-auth) on 127.0.0.1 at a free port, the trained run served as a model, and one chat
completion through the official `openai` client equal to the run's greedy reply from `tunelab.load`.
See test_matrix_expected.py."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time

import pytest
from test_matrix_expected import CONVS, NAMES, expect, matrix_runs, outcome_of  # noqa: F401 (fixture)

START_S, STOP_S = 30.0, 10.0  # bounded waits for the server thread
MAX_TOKENS = 8


@contextlib.contextmanager
def _served(app):
    """`app` under uvicorn in a thread on 127.0.0.1 at a free port; yields the port, stops at the end."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + START_S
    while not srv.started:
        assert th.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        srv.should_exit = True
        th.join(STOP_S)


def _check_serve(family: str, run, tmp_path) -> None:
    import openai

    import tunelab
    from tunelab.errors import TunelabError
    from tunelab.serve.app import create_app
    from tunelab.serve.model_pool import ModelPool
    from tunelab.serve.state import ServeState

    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base=f"tiny-{family}", auth=False)
    shutil.copytree(run, state.runs / run.name)
    pool = ModelPool(state, device="cpu")  # TunelabError: the one line `tunelab serve --base` prints
    try:
        with _served(create_app(state, pool=pool)) as port, contextlib.ExitStack() as stack:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=30)
            stack.callback(client.close)  # no keep-alive connection left for the server's shutdown to wait on
            assert run.name in {m.id for m in client.models.list()}, "the run is not listed"
            try:
                r = client.chat.completions.create(model=run.name, messages=CONVS[1], max_tokens=MAX_TOKENS,
                                                   temperature=0)
            except openai.BadRequestError as e:  # a clean refusal in OpenAI's error shape: the outcome
                body = e.body if isinstance(e.body, dict) else {}
                raise TunelabError(f"HTTP 400: {body.get('message', e.message)}") from None
    finally:
        pool.close()
    got = r.choices[0].message.content
    want = tunelab.load(run, device="cpu").reply(CONVS[1], max_new_tokens=MAX_TOKENS)
    assert r.model == run.name and got.strip() == want, f"served {got!r} != tunelab.load's {want!r}"


@pytest.mark.parametrize("family", NAMES)
def test_serve_chat_completion(family, matrix_runs, tmp_path):
    run = matrix_runs(family)
    expect(family, "serve", outcome_of(lambda: _check_serve(family, run, tmp_path)))
