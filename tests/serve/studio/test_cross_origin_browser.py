"""A page of another site, in a real browser (headless Chromium), against `tunelab serve --no-auth`: it can
neither read a reply (no CORS headers) nor write anything (the request guard's Origin and Content-Type
checks: no file, no job, no knowledge base). Marked `browser` (run by .ci/run)."""

from __future__ import annotations

import json

import pytest

from tests.serve.conftest import uvicorn_thread
from tests.serve.test_guard import MODULES, FakePool, _state

pytestmark = pytest.mark.browser

EVIL = """<!doctype html><html><body><form id="f" method="post" enctype="multipart/form-data" target="sink">
<input name="name" value="stolen"><input type="file" name="files"></form>
<form id="g" method="post" enctype="text/plain" target="sink"><input name='{"model": "base", "training_file": "x", "pad' value='"}'></form>
<iframe name="sink"></iframe>
<script>
const T = "%(target)s";
const out = {};
async function attempt(name, url, opts) {
  try { const r = await fetch(url, opts); out[name] = "status " + r.status + " " + (await r.text()); }
  catch (e) { out[name] = "blocked: " + e.name; }
}
(async () => {
  await attempt("read models", T + "/v1/models", {});
  await attempt("read studio", T + "/studio/api/kbs", {});
  const fd = new FormData();
  fd.append("purpose", "fine-tune");
  fd.append("file", new Blob(['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\\n']), "t.jsonl");
  await attempt("upload", T + "/v1/files", {method: "POST", body: fd, mode: "no-cors"});
  await attempt("job as text/plain", T + "/v1/fine_tuning/jobs",
                {method: "POST", mode: "no-cors", body: JSON.stringify({model: "base", training_file: "file-x"})});
  await attempt("job as json", T + "/v1/fine_tuning/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
                body: JSON.stringify({model: "base", training_file: "file-x"})});
  const kb = new FormData();
  kb.append("name", "stolen");
  kb.append("files", new Blob(["secret plans"]), "a.txt");
  await attempt("knowledge base", T + "/studio/api/kbs", {method: "POST", body: kb, mode: "no-cors"});
  document.getElementById("f").action = T + "/studio/api/kbs";
  document.getElementById("f").submit();
  document.getElementById("g").action = T + "/v1/fine_tuning/jobs";
  await new Promise(r => setTimeout(r, 500));
  document.getElementById("g").submit();
  await new Promise(r => setTimeout(r, 1000));
  window.result = out;
})();
</script></body></html>"""


def test_a_foreign_page_can_neither_read_nor_write(browser_page, tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from tunelab.serve.app import create_app
    from tunelab.serve.jobs_db import conn

    state = _state(tmp_path, auth=False)
    with uvicorn_thread(create_app(state, extra_modules=list(MODULES), pool=FakePool())) as port:
        target = f"http://127.0.0.1:{port}"
        evil_app = Starlette(routes=[Route("/", lambda request: HTMLResponse(EVIL % {"target": target}))])
        with uvicorn_thread(evil_app, what="the foreign site") as evil_port:
            page = browser_page
            page.goto(f"http://localhost:{evil_port}/")  # another origin (host and port)
            page.wait_for_function("window.result !== undefined", timeout=30_000)
            result = page.evaluate("window.result")
        # the server's own page still works, same origin
        page.goto(f"{target}/")
        ok = page.evaluate("fetch('/studio/api/kbs').then(r => r.status)")
    assert ok == 200, result
    assert result["read models"].startswith("blocked") and result["read studio"].startswith("blocked"), result
    assert result["job as json"].startswith("blocked"), result  # the preflight is refused: nothing sent
    files = list(state.files_dir.iterdir()) if state.files_dir.exists() else []
    assert files == [], json.dumps(result)
    assert conn(state.db_path).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert conn(state.db_path).execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    assert not (state.home / "kb-docs").exists() and not any((tmp_path / "kb").glob("*"))


def test_the_studio_deletes_a_document_then_the_knowledge_base(browser_page, tmp_path):
    """The Studio's own page (same origin, --no-auth): its Delete buttons go through the guard."""
    pytest.importorskip("lancedb", reason="the rag extra is not installed")
    from tests.serve.test_guard import send
    from tunelab.serve.app import create_app

    state = _state(tmp_path, auth=False)
    with uvicorn_thread(create_app(state, extra_modules=list(MODULES), pool=FakePool())) as port:
        body, ctype = _two_docs()
        status, kb = send(port, "POST", "/studio/api/kbs", body, {"Content-Type": ctype})
        assert status == 200 and kb["files"] == 2, kb
        page = browser_page
        page.on("dialog", lambda d: d.accept())
        page.goto(f"http://127.0.0.1:{port}/kb/notes")
        page.click("button[data-kb-delete$='/documents/a.txt']")
        page.wait_for_selector("button[data-kb-delete$='/documents/b.txt']")
        page.wait_for_function("!document.querySelector(\"button[data-kb-delete$='/documents/a.txt']\")")
        assert send(port, "GET", "/studio/api/kbs")[1]["data"][0]["files"] == 1
        page.click("text=Delete this knowledge base")
        page.wait_for_url(f"http://127.0.0.1:{port}/kb")
        assert send(port, "GET", "/studio/api/kbs")[1]["data"] == []
        assert page.js_errors == []
    assert not (state.home / "kb-docs" / "default" / "notes").exists()


def _two_docs() -> tuple[bytes, str]:
    import uuid

    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="name"\r\n\r\nnotes\r\n'.encode()]
    for name, text in (("a.txt", b"Ferries leave at nine."), ("b.txt", b"Buses leave at noon.")):
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     f"Content-Type: text/plain\r\n\r\n".encode() + text + b"\r\n")
    parts.append(f"--{b}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={b}"
