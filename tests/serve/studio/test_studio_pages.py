"""The Studio's HTML and JSON routes through FastAPI's TestClient (no browser, no model pool): page
shells carry no tenant data and label every control, fragments and APIs need the key and keep tenants
apart, the runs table and curves are what the run folders hold, the memory estimate is tunelab
memory's, an upload is inspected as `tunelab data inspect` does, reports are escaped."""

from __future__ import annotations

import html.parser
import json
from pathlib import Path

import pytest

PAGES = ["/", "/runs", "/runs/r1", "/compare?runs=r1&runs=r2", "/datasets", "/datasets/file-x", "/new", "/jobs",
         "/jobs/ftjob-x", "/chat", "/kb", "/kb/notes"]


def _run(root, name: str, losses: list[float], val: float | None, done: bool = True, method: str = "lora"):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"task: sft\nmodel:\n  name: /models/tiny-llama\nmethod:\n  name: {method}\n")
    rows = [{"step": i + 1, "loss": x} for i, x in enumerate(losses)]
    if val is not None:
        rows.append({"step": len(losses), "epoch": 1, "val_loss": val})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "report.md").write_text("# Run\n\n| a | b |\n|---|---|\n| 1 | <script>x</script> |\n")
    if done:
        (d / "DONE").write_text("")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("studio-pages")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), kb=tmp / "kb")
    _run(state.runs, "r1", [3.0, 2.5, 2.0], 2.25)
    _run(state.runs, "r2", [4.0, 3.0], None, done=False, method="qlora")
    _run(state.tenant_runs("bob"), "bobs", [1.0], 0.5)
    keys = {t: create_key(state.db_path, t)[1] for t in ("default", "bob")}
    with TestClient(create_app(state, pool=object())) as client:
        yield client, state, {t: {"Authorization": f"Bearer {k}"} for t, k in keys.items()}


class _Controls(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.controls, self.labels, self.wrapped, self.depth = [], set(), 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self.depth += 1
            if a.get("for"):
                self.labels.add(a["for"])
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append((a.get("id"), self.depth > 0 or "aria-label" in a))

    def handle_endtag(self, tag):
        if tag == "label":
            self.depth -= 1


def test_pages_are_shells_with_labelled_controls(studio):
    client, _, _ = studio
    for url in PAGES:
        r = client.get(url)  # no key: a shell holds no tenant data
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), url
        assert 'data-auth="1"' in r.text and "/studio/static/studio.js" in r.text
        assert "r1" not in r.text or url.startswith(("/runs/r1", "/compare")), url
        p = _Controls()
        p.feed(r.text)
        unlabelled = [cid for cid, wrapped in p.controls if not wrapped and cid not in p.labels]
        assert unlabelled == [], (url, unlabelled)
    assert client.get("/studio/static/pages.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/studio/static/uPlot.iife.min.js").text.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32)")
    r = client.get("/studio/static/../app.py")
    assert r.status_code == 404 and r.json()["error"]["code"]
    assert client.get("/runs/..%2Fx").status_code in (400, 404)


def test_fragments_need_the_key_and_keep_tenants_apart(studio):
    client, _, h = studio
    r = client.get("/studio/f/runs")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert client.get("/studio/api/whoami", headers=h["bob"]).json() == {"tenant": "bob", "auth": True}
    rows = {r["name"]: r for r in client.get("/studio/api/runs", headers=h["default"]).json()["data"]}
    assert set(rows) == {"r1", "r2"}  # bob's run is not listed
    assert rows["r1"] | {"mtime": 0} == {"name": "r1", "status": "finished", "task": "sft", "model": "tiny-llama",
                                         "method": "lora", "final_valid_loss": 2.25, "steps": 3, "mtime": 0}
    assert rows["r2"]["status"] == "incomplete" and rows["r2"]["final_valid_loss"] is None
    table = client.get("/studio/f/runs", headers=h["default"]).text
    assert "2.2500" in table and 'href="/runs/r1"' in table and "qlora" in table
    assert client.get("/studio/api/runs/r1/metrics", headers=h["default"]).json() == {
        "name": "r1", "train": [[1, 3.0], [2, 2.5], [3, 2.0]], "valid": [[3, 2.25]], "base": [], "axis": "loss",
        "labels": ["train", "validation", "base model (validation, step 0)"]}
    for url in ("/studio/api/runs/bobs/metrics", "/studio/f/runs/bobs"):
        r = client.get(url, headers=h["default"])
        assert r.status_code == 404 and r.json()["error"]["message"] == "No such run: 'bobs'"
    page = client.get("/studio/f/runs/r1", headers=h["default"]).text
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page  # the report is escaped
    assert 'data-export="gguf"' in page and 'data-chart-runs="r1"' in page
    assert "Export is possible once" in client.get("/studio/f/runs/r2", headers=h["default"]).text


def test_memory_estimate_is_tunelab_memory(studio):
    from tunelab.memory.estimator import estimate

    client, state, h = studio
    got = client.get("/studio/api/memory", params={"model": state.base, "method": "qlora", "batch": 4, "seq": 128},
                     headers=h["default"]).json()
    want = estimate(state.base, "qlora", 4, 128, r=16)
    assert got["total"] == want.total and got["fits"] == want.fits and got["device"] == want.device
    assert [r["bytes"] for r in got["rows"]] == [b for _, b, _ in want.rows]
    r = client.get("/studio/api/memory", params={"model": state.base, "method": "dora"}, headers=h["default"])
    assert r.status_code == 400 and r.json()["error"]["param"] == "method"
    r = client.get("/studio/api/memory", params={"model": "/nowhere/x"}, headers=h["default"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"  # never a server path


def test_upload_is_inspected_as_data_inspect(studio, tmp_path):
    from tunelab.config import from_dict
    from tunelab.data.inspect import inspect_config

    client, state, h = studio
    lines = "".join(Path("examples/data/tunebot/train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:5])
    f = client.post("/v1/files", files={"file": ("t.jsonl", lines.encode())}, data={"purpose": "fine-tune"},
                    headers=h["default"]).json()
    rep = client.get(f"/studio/api/files/{f['id']}/inspect", headers=h["default"]).json()
    (tmp_path / "t.jsonl").write_text(lines)
    want = inspect_config(from_dict({"model": {"name": state.base}, "data": {"train": str(tmp_path / "t.jsonl")}}))
    s = want.splits[0]
    assert rep["splits"][0] | {"bins": None} == {"name": "train", "count": 5, "mean": round(s.mean, 1),
                                                 "max": max(s.lengths), "truncated": s.truncated,
                                                 "learned_tokens": s.learned_tokens, "bins": None}
    assert sum(c for _, _, c in rep["splits"][0]["bins"]) == 5
    ex = want.examples[0]
    assert rep["example"]["total"] == len(ex.input_ids)
    assert sum(n for _, learned, n in rep["example"]["tokens"] if learned) == ex.n_target
    assert rep["example"]["where"].startswith("t.jsonl")
    html = client.get(f"/studio/f/files/{f['id']}/inspect", headers=h["default"]).text
    pieces = rep["example"]["tokens"]
    assert html.count('class="learn"') == sum(1 for _, learned, _ in pieces if learned) + 1  # + the legend's
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(state.base)
    assert "".join(t for t, _, _ in pieces) == tok.decode(ex.input_ids)  # the pieces are the whole text
    r = client.get(f"/studio/f/files/{f['id']}/inspect", headers=h["bob"])  # another tenant's file
    assert r.status_code == 404


def test_no_auth_asks_no_key(tmp_path, tiny_model_dir):
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app
    from tunelab.serve.state import ServeState

    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base=str(tiny_model_dir), auth=False)
    with TestClient(create_app(state, pool=object())) as client:
        assert 'data-auth="0"' in client.get("/").text
        assert client.get("/studio/api/whoami").json() == {"tenant": "default", "auth": False}
        assert "No runs yet" in client.get("/studio/f/runs").text


def test_run_summary_reads_what_the_yaml_and_metrics_hold(tmp_path):
    import yaml

    from tunelab.config import dump_config, from_dict
    from tunelab.serve.studio.runs_data import run_summary, summary_fields

    text = dump_config(from_dict({"task": "dpo", "model": {"name": "/m/tiny llama"}, "data": {"train": "x.jsonl"},
                                  "method": {"name": "qlora"}}))
    cfg = yaml.safe_load(text)
    assert summary_fields(text) == {"task": cfg["task"], "model.name": cfg["model"]["name"],
                                    "method.name": cfg["method"]["name"]} == {
        "task": "dpo", "model.name": "/m/tiny llama", "method.name": "qlora"}
    assert summary_fields("model:\n  name: 'quoted: x'\n") is None  # not plain: the caller parses the YAML
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: 'quoted: x'\nmethod:\n  name: lora\n")
    rows = [{"step": 1, "val_loss": 1.5}] + [{"step": s, "loss": 2.0} for s in range(2, 2001)]  # eval far back
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = run_summary(run)
    assert (s["model"], s["method"], s["task"], s["final_valid_loss"], s["steps"]) == ("quoted: x", "lora", "sft", 1.5, 2000)


def test_kb_upload_takes_the_upload_limit_not_the_body_limit(studio):
    client, state, h = studio
    doc = ("The Tolvaris ferry leaves at nine. " * 40000).encode()  # about 1.4 MB: over the 1 MiB body limit
    assert len(doc) > state.body_limit
    # an invalid name: the whole body is read, then the name is refused (400), so nothing is indexed
    post = lambda: client.post("/studio/api/kbs", headers=h["default"],  # noqa: E731
                               data={"name": "../big"}, files={"files": ("ferry.txt", doc)})
    limit, state.upload_limit = state.upload_limit, len(doc) // 2
    try:
        r = post()
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    finally:
        state.upload_limit = limit
    r = post()
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"


def test_kb_page_states_the_servers_upload_limit(studio):
    """The knowledge-base form names the limit the request guard applies to its upload (state.upload_limit)."""
    from tunelab.serve.studio.html import fmt_bytes

    client, state, _ = studio
    text = client.get("/kb").text
    assert f"{fmt_bytes(state.upload_limit)} in all" in text and "1 MiB" not in text
    limit, state.upload_limit = state.upload_limit, 3 * 2**20
    try:
        assert "3.0 MiB in all" in client.get("/kb").text
    finally:
        state.upload_limit = limit
