"""The architecture matrix, serving side: per family, the app `tunelab serve` runs (one base per server:
the run's tiny-<family>, --no-auth) on 127.0.0.1 at a free port, the trained run served as a model, and greedy
chat completions through the official `openai` client (3 prompts, to the run and to the base) equal to the
replies of `tunelab.load(run)` and of the base's Generator.
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


def _check_serve(run, tmp_path) -> None:
    import openai

    import tunelab
    from tunelab.infer.generate import Generator
    from tunelab.runs.load import load_run
    from tunelab.serve.app import create_app
    from tunelab.serve.model_pool import ModelPool
    from tunelab.serve.state import ServeState

    base = load_run(run)[0].config.model.name  # tiny-<family>, as the run was trained on it
    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base=base, auth=False)
    shutil.copytree(run, state.runs / run.name)
    pool = ModelPool(state, device="cpu")  # TunelabError: the one line `tunelab serve --base` prints
    try:
        with _served(create_app(state, pool=pool)) as port, contextlib.ExitStack() as stack:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=30)
            stack.callback(client.close)  # no keep-alive connection left for the server's shutdown to wait on
            assert run.name in {m.id for m in client.models.list()}, "the run is not listed"
            served = {(name, i): _chat(client, name, conv) for name in (run.name, base)
                      for i, conv in enumerate(CONVS)}
    finally:
        pool.close()
    # the run as `tunelab.load` decodes it; the base as the server does (its tokenizer's own template)
    trained, bare = tunelab.load(run, device="cpu"), Generator.from_model(base, device="cpu")
    want = {(name, i): gen.reply(conv, max_new_tokens=MAX_TOKENS)
            for name, gen in ((run.name, trained), (base, bare)) for i, conv in enumerate(CONVS)}
    assert any(want.values()), "every reply is empty: nothing compared"
    for key, text in served.items():
        assert text.strip() == want[key], f"served {key[0][-12:]} {text!r} != tunelab's {want[key]!r}"


def _chat(client, model: str, conv: list[dict]) -> str:
    """One greedy chat completion through the openai client; a 400 in OpenAI's error shape is the outcome."""
    import openai

    from tunelab.errors import TunelabError

    try:
        r = client.chat.completions.create(model=model, messages=conv, max_tokens=MAX_TOKENS, temperature=0)
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        raise TunelabError(f"HTTP 400: {body.get('message', e.message)}") from None
    assert r.model == model and r.choices[0].finish_reason in ("stop", "length")
    return r.choices[0].message.content


@pytest.mark.parametrize("family", NAMES)
def test_serve_chat_completion(family, matrix_runs, tmp_path):
    run = matrix_runs(family)
    expect(family, "serve", outcome_of(lambda: _check_serve(run, tmp_path)))
