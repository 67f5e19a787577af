"""Fixtures of the Studio tests: a server with the Studio on the tiny Llama (auth on, one key), and a
headless Chromium driven by Playwright (Debian's chromium; Playwright's own browser download is not used).

    studio_server   module: Studio(url, state, key, run) with one finished run "seed" (tiny_run) present
    browser_page    function: a fresh Playwright page at 1280x800; skipped with the reason when
                    playwright or /usr/bin/chromium is missing
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serve.conftest import uvicorn_thread

CHROMIUM = os.environ.get("TUNELAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Studio:
    url: str
    state: object
    key: str
    tmp: Path


@pytest.fixture(scope="module")
def studio_server(tmp_path_factory, tiny_model_dir, tiny_run):
    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("studio")
    seed = tiny_run(tmp, "seed", runs="trained", steps=4, eval_extra=None)
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), kb=tmp / "kb")
    state.runs.mkdir(parents=True)
    shutil.copytree(seed, state.runs / "seed")
    # one thread: on 2 shared cores the tiny model's steps are several times faster than with two
    state.job_overrides = ["train.precision=fp32", "train.threads=1"]
    key = create_key(state.db_path, "default")[1]
    with uvicorn_thread(create_app(state), what="the studio server", stop_s=30) as port:
        yield Studio(f"http://127.0.0.1:{port}", state, key, tmp)


@pytest.fixture
def browser_page():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (the Python package; no browser download)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.js_errors = errors
            yield page
        finally:
            browser.close()
