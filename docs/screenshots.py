"""One PNG per Studio page into docs/screenshots/ (home and chat also at the phone size, 390x844).

    python docs/screenshots.py                 # the embedded SmolLM2-135M: a real fine-tune (a few minutes)
    python docs/screenshots.py --tiny          # a tiny random Llama: quick, but its replies are noise
    python docs/screenshots.py --dir D         # keep the server's folders in D; run again: reuses its jobs
    python docs/screenshots.py --only run,column-mapping   # only these pages

It starts `tunelab serve`'s app (--no-auth, 127.0.0.1, a free port) on fresh folders in a temp
directory, fills it through the API (a dataset, a short fine-tuning job, a second run, a knowledge
base of examples/data/knowledge-tolvaris/docs), then drives headless Chromium (Debian's
/usr/bin/chromium through Playwright) through each page at 1280x800.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRAIN = ROOT / "examples/data/tunebot/train.jsonl"
VAL = ROOT / "examples/data/tunebot/validation.jsonl"
KB_DOCS = ROOT / "examples/data/knowledge-tolvaris/docs"
# a CSV whose columns are no known format: the Studio's column-mapping step (column-mapping.png)
QA_CSV = ("question,answer,source\n"
          "What does a Hallowport tram ticket cost?,2 tolv marks for one ride.,faq\n"
          "When does the Kessling ferry leave?,At 07:40 every morning.,timetable\n"
          "How tall is the Cape Senn lighthouse?,47 metres | built in 1868.,guide\n").encode()


def _lines(path: Path, n: int) -> bytes:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:n]).encode()


def _httpx():
    try:
        import httpx
    except ImportError:  # the environment's fork of it (the tests use it too)
        import httpx2 as httpx
    return httpx


def serve(state):
    import uvicorn

    from tunelab.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.monotonic() + 300
    while not srv.started:
        if time.monotonic() > deadline:
            sys.exit("the server did not start in 300 s")
        time.sleep(0.1)
    return srv, f"http://127.0.0.1:{port}"


def fill(url: str, base: str, epochs: int) -> dict:
    """Two jobs (the second makes the overlay), a knowledge base; returns the ids the pages need."""
    httpx = _httpx()

    c = httpx.Client(base_url=url, timeout=600)
    up = lambda name, data: c.post("/v1/files", files={"file": (name, data)}, data={"purpose": "fine-tune"}).json()
    train, val = up("tunebot-train.jsonl", _lines(TRAIN, 16)), up("tunebot-val.jsonl", _lines(VAL, 2))
    qa = up("tolvaris-qa.csv", QA_CSV)  # refused as it is: the mapping page shows it
    jobs = []
    for suffix, mult, n_epochs in (("tunebot", 2.0, epochs), ("tunebot-lr", 0.5, max(1, epochs - 1))):
        jobs.append(c.post("/v1/fine_tuning/jobs", json={
            "model": base, "training_file": train["id"], "validation_file": val["id"], "suffix": suffix, "seed": 1,
            "hyperparameters": {"n_epochs": n_epochs, "batch_size": 4, "learning_rate_multiplier": mult}}).json())
    files = [("files", (p.name, p.read_bytes())) for p in sorted(KB_DOCS.glob("*.md"))]
    r = c.post("/studio/api/kbs", data={"name": "tolvaris"}, files=files)
    r.raise_for_status()
    for j in jobs:
        deadline = time.monotonic() + 1800
        while (job := c.get(f"/v1/fine_tuning/jobs/{j['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                sys.exit(f"job {j['id']} did not end in 30 minutes")
            time.sleep(2)
        if job["status"] != "succeeded":
            sys.exit(f"job {j['id']} {job['status']}: {job.get('error')}")
        j.update(job)
    return {"train": train["id"], "csv": qa["id"], "jobs": jobs, "runs": [j["fine_tuned_model"] for j in jobs]}


def recover(url: str) -> dict | None:
    """The ids of an earlier `fill` on the same folders (--dir), or None."""
    httpx = _httpx()

    c = httpx.Client(base_url=url, timeout=60)
    jobs = [j for j in c.get("/v1/fine_tuning/jobs").json()["data"] if j["status"] == "succeeded"][::-1]
    listed = c.get("/v1/files").json()["data"]
    files = [f for f in listed if f["filename"] == "tunebot-train.jsonl"]
    if len(jobs) < 2 or not files:
        return None
    csv = [f for f in listed if f["filename"] == "tolvaris-qa.csv"]
    if not csv:
        csv = [c.post("/v1/files", files={"file": ("tolvaris-qa.csv", QA_CSV)}, data={"purpose": "fine-tune"}).json()]
    return {"train": files[0]["id"], "csv": csv[0]["id"], "jobs": jobs[:2],
            "runs": [j["fine_tuned_model"] for j in jobs[:2]]}


def shoot(url: str, ids: dict, base: str, only: set[str] | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    made = []
    run, other = ids["runs"] if ids.get("runs") else (None, None)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)

        def at(path: str, name: str, size=(1280, 800), act=None, full=True):
            if only is not None and name not in only:
                return
            page = browser.new_page(viewport={"width": size[0], "height": size[1]})
            page.goto(url + path)
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            if act:
                act(page)
            page.wait_for_timeout(400)
            out = OUT / f"{name}.png"
            page.screenshot(path=str(out), full_page=full)
            page.close()
            made.append(out)

        def chat(page):
            page.select_option("#model1", run)
            page.select_option("#model2", run)
            page.select_option("#kb2", "tolvaris")
            page.check("[name=on2]")
            page.fill("#system", "You are TuneBot. You reply to comments on a data-science video channel.")
            page.fill("#prompt", "What does a Hallowport tram ticket cost?")
            page.click("#chat button[type=submit]")
            page.wait_for_function("document.querySelectorAll('.answer[data-done]').length == 3", timeout=600_000)

        def ask(page):
            page.fill("#question", "How tall is the Cape Senn lighthouse?")
            page.select_option("#ask-model", base)
            page.click("#kb-ask button")
            page.wait_for_selector("#kb-answer .cites a", timeout=600_000)

        if "empty" in ids:  # before any upload: what /new says when there is no training file
            at("/new", "new-fine-tune-empty", act=lambda pg: pg.wait_for_selector("#upload"))
            browser.close()
            return made
        at("/", "home")
        at("/", "home-390", (390, 844))
        at("/runs", "runs")
        at(f"/runs/{run}", "run")
        at(f"/compare?runs={run}&runs={other}", "compare", full=False)
        at("/datasets", "datasets")
        at(f"/datasets/{ids['train']}", "dataset-inspect",
           act=lambda pg: pg.wait_for_selector("#example", timeout=120_000))
        at(f"/datasets/{ids['csv']}/columns", "column-mapping", act=lambda pg: pg.wait_for_selector("#columns"))
        at(f"/new?file={ids['train']}", "new-fine-tune", act=lambda pg: pg.wait_for_selector("#fit", timeout=60_000))
        at(f"/jobs/{ids['jobs'][0]['id']}", "job",
           act=lambda pg: pg.wait_for_selector("#job-status[data-status='succeeded']", timeout=60_000))
        at("/chat", "chat", act=chat)
        at("/chat", "chat-390", (390, 844), act=chat)
        at("/kb", "knowledge-bases")
        at("/kb/tolvaris", "knowledge-base-ask", act=ask, full=False)
        browser.close()
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of the embedded SmolLM2")
    ap.add_argument("--dir", type=Path, help="the server's folders (kept; a second run reuses its jobs)")
    ap.add_argument("--only", help="comma-separated page names (run, column-mapping, ...): only these")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    os.environ.setdefault("OMP_NUM_THREADS", "1" if args.tiny else "2")
    from tunelab.serve.state import ServeState

    tmp = args.dir or Path(tempfile.mkdtemp(prefix="studio-shots-"))
    if args.tiny:
        from tunelab.models.tiny import build_tiny_llama

        base = str(tmp / "tiny-llama") if (tmp / "tiny-llama").is_dir() else str(build_tiny_llama(tmp / "tiny-llama"))
    else:
        base = "smollm2-135m-instruct"
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=base, auth=False, kb=tmp / "kb")
    state.job_overrides = ["train.precision=fp32", "data.max_length=256"]
    srv, url = serve(state)
    try:
        ids = recover(url)
        if ids is None:
            for p in shoot(url, {"empty": True}, base, only):
                print(p.relative_to(ROOT))
            if only is not None and only <= {"new-fine-tune-empty"}:
                return  # nothing else asked for: no jobs to run
            ids = fill(url, base, epochs=3)
        for p in shoot(url, ids, base, only):
            print(p.relative_to(ROOT))
    finally:
        srv.should_exit = True


if __name__ == "__main__":
    main()
