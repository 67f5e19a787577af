"""The Studio's run tables, loss charts and column-mapping step without a browser (TestClient, and the
serving classes directly): a report's cells escape Markdown and HTML (a `|` in a prompt stays in its cell),
the curves carry the base model's validation loss at step 0, the chart's colours are distinct and its
step ticks whole, and a CSV of other column names is previewed, mapped, and trained with the mapping as
its run's `data.columns`; every refusal a 4xx in OpenAI's shape that changes nothing."""

from __future__ import annotations

import io
import json
import re

import pytest

QA_CSV = ("q_text,reply_text,id\n"
          "What is 2 | 3?,\"It is 3, a bitwise or \\ pipe.\",1\n"
          "Say **hi** <b>now</b>,hi,2\n"
          "Capital of France?,Paris.,3\n").encode()


def test_report_cells_escape_markdown_and_html():
    from tunelab.runs.report import cell
    from tunelab.serve.studio.html import markdown, split_row

    text = "a | b \\ c **bold** `code` <script>x</script> &amp; _u_\nnext line"
    md = f"| prompt | base | tuned |\n|---|---|---|\n| {cell(text)} | {cell('1|2')} | {cell('plain')} |\n"
    assert split_row(md.splitlines()[2]) == [cell(text), cell("1|2"), "plain"]  # three cells, not six
    html = markdown(md)
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert cells == ["a | b \\ c **bold** `code` &lt;script&gt;x&lt;/script&gt; &amp;amp; _u_<br>next line",
                     "1|2", "plain"]
    assert "<script>" not in html and "<b>" not in html and "<code>" not in html
    assert "\\|" not in html  # no stray backslash before a pipe
    # what tunelab's own reports mean as markup still is: `code`, **bold**, <br>; a header cell is split too
    assert markdown("| `x` \\| y | **z** |\n|---|---|\n| a<br>b | c |") == (
        '<div class="scroll"><table><thead><tr><th scope="col"><code>x</code> | y</th><th scope="col"><b>z</b></th>'
        '</tr></thead><tbody><tr><td>a<br>b</td><td>c</td></tr></tbody></table></div>')
    assert split_row("| a \\\\| b |") == ["a \\\\", "b"]  # an escaped backslash, then a real pipe


def test_metrics_carry_the_base_validation_loss_at_step_0(tmp_path):
    from tunelab.serve.studio.runs_data import base_valid_loss, read_metrics

    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "epoch": 1, "val_loss": 1.5}\n')
    assert read_metrics(run)["base"] == []  # no report yet (a run in progress)
    (run / "report.md").write_text("# Run `r`\n\n## Held-out prompts: base vs tuned\n\n| prompt | base | tuned |\n"
                                   "|---|---|---|\n| base | 9 | x |\n\n## Validation loss (mean NLL per reply token)\n\n"
                                   "| | loss | perplexity |\n|---|---|---|\n| base | 2.4375 | 11.44 |\n"
                                   "| epoch 1 | 1.5000 | 4.48 |\n| final (kept) | 1.5000 | 4.48 |\n")
    assert base_valid_loss(run) == 2.4375  # the validation table's row, not a prompt that reads "base"
    assert read_metrics(run) == {"train": [[1, 2.0]], "valid": [[2, 1.5]], "base": [[0, 2.4375]], "axis": "loss",
                                 "labels": ["train", "validation", "base model (validation, step 0)"]}


def test_a_grpo_run_charts_its_rewards_with_the_pass_before_training_as_base(tmp_path):
    from tunelab.serve.studio.runs_data import read_metrics

    run = tmp_path / "g"
    run.mkdir()
    (run / "config.yaml").write_text("task: grpo\nmodel: {name: m}\n")
    (run / "metrics.jsonl").write_text(  # as train/recipes/grpo.py writes them: held-out passes at 0 and 2
        '{"step": 0, "heldout/reward": 0.25, "heldout_n": 4}\n{"step": 1, "loss": 0.1, "reward": 0.5}\n'
        '{"step": 2, "loss": -0.2, "reward": 0.75}\n{"step": 2, "heldout/reward": 0.625, "heldout_n": 4}\n')
    got = read_metrics(run)
    assert (got["train"], got["valid"], got["base"], got["axis"]) == ([[1, 0.5], [2, 0.75]], [[2, 0.625]],
                                                                      [[0, 0.25]], "reward")
    assert got["labels"][1] == "held-out reward (greedy)"


def test_chart_colours_are_distinct_and_step_ticks_whole(studio_client):
    from tunelab.serve.studio.chart import CHART, STEP_INCRS

    colours = [c for pair in CHART["runs"] for c in (pair["train"], pair["valid"])]
    assert len(set(c.lower() for c in colours)) == len(colours)  # train vs validation, and run vs run
    assert CHART["valid_dash"] and CHART["base"]["fill"] not in colours  # dashed; the base a hollow ring
    assert all(isinstance(i, int) and i >= 1 for i in STEP_INCRS) and 2.5 not in STEP_INCRS
    assert STEP_INCRS == sorted(STEP_INCRS) and STEP_INCRS[:4] == [1, 2, 5, 10]
    client, _, _ = studio_client
    page = client.get("/runs/r1").text
    chart = json.loads(re.search(r'data-chart="([^"]*)"', page).group(1).replace("&quot;", '"'))
    assert chart == CHART  # what studio.js draws with


@pytest.fixture(scope="module")
def studio_client(tmp_path_factory, tiny_model_dir):
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("studio-columns")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), kb=tmp / "kb")
    (state.runs / "r1").mkdir(parents=True)
    (state.runs / "r1" / "config.yaml").write_text("task: sft\nmodel:\n  name: m\nmethod:\n  name: lora\n")
    keys = {t: create_key(state.db_path, t)[1] for t in ("default", "bob")}
    with TestClient(create_app(state, pool=object())) as client:
        yield client, state, {t: {"Authorization": f"Bearer {k}"} for t, k in keys.items()}


def _upload(client, h, name: str, data: bytes) -> dict:
    return client.post("/v1/files", files={"file": (name, data)}, data={"purpose": "fine-tune"}, headers=h).json()


def test_new_fine_tune_explains_what_to_do_without_a_file(studio_client):
    client, _, h = studio_client
    text = client.get("/studio/f/new", headers=h["bob"]).text  # bob has no file
    assert "No training file yet" in text and '<form id="upload"' in text and 'id="upfile"' in text
    assert "question,answer" in text and "which column" in text and "prompt" in text and "chosen" in text


def test_a_csv_of_other_columns_is_previewed_and_mapped(studio_client):
    client, state, h = studio_client
    f = _upload(client, h["default"], "qa.csv", QA_CSV)
    assert f["status"] == "error" and "data.columns" in f["status_details"]
    from tunelab.serve.studio.columns_view import preview

    p = preview(state, "default", f["id"])
    assert p["fields"] == ["q_text", "reply_text", "id"] and p["count"] == 3
    assert p["records"][0] == {"q_text": "What is 2 | 3?", "reply_text": "It is 3, a bitwise or \\ pipe.", "id": "1"}
    assert p["suggested"]["format"] == "prompt_completion" and set(p["suggested"]["columns"]) == {"prompt", "completion"}
    frag = client.get(f"/studio/f/files/{f['id']}/columns", headers=h["default"]).text
    assert "Say **hi** &lt;b&gt;now&lt;/b&gt;" in frag and "<b>now</b>" not in frag  # the preview is escaped
    assert 'id="col-prompt"' in frag and 'data-file="' + f["id"] in frag
    files_list = client.get("/studio/f/files", headers=h["default"]).text
    assert f'href="/datasets/{f["id"]}/columns"' in files_list  # a refused file links to its mapping

    url = f"/studio/api/files/{f['id']}/columns"
    post = lambda body, **kw: client.post(url, json=body, headers=h["default"], **kw)  # noqa: E731
    for body, param, code in [
        ({"columns": {"prompt": "q_text", "completion": "nope"}}, "columns.completion", "invalid_value"),
        ({"columns": {"question": "q_text"}}, "columns.question", "invalid_value"),
        ({"columns": {"prompt": "q_text", "completion": "q_text"}}, "columns.completion", "invalid_value"),
        ({"columns": {}}, "columns", "missing_required_parameter"),
        ({"columns": {"prompt": "q_text"}, "x": 1}, "x", "unknown_parameter"),
    ]:
        r = post(body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert (err["param"], err["code"]) == (param, code), (body, err)
        assert err["message"] and err["type"] == "invalid_request_error"
    r = post({"columns": {"prompt": "q_text"}})  # no completion: the data layer's own line, nothing changed
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file"
    assert "qa.csv:" in r.json()["error"]["message"]
    assert client.get(f"/v1/files/{f['id']}", headers=h["default"]).json()["status"] == "error"
    r = client.post(url, content=b"columns=x", headers={**h["default"], "Content-Type": "text/plain"})
    assert r.status_code == 415  # JSON only (the request guard)
    r = client.post(url, content=b"{not json", headers={**h["default"], "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_body"
    r = client.post(url, json={"columns": {"prompt": "q_text", "completion": "reply_text"}}, headers=h["bob"])
    assert r.status_code == 404  # another tenant's file
    assert client.get(f"/studio/f/files/{f['id']}/columns", headers=h["bob"]).status_code == 404
    bad = _upload(client, h["default"], "bad.jsonl", b'{"a": 1}\n{oops\n')
    r = client.get(f"/studio/f/files/{bad['id']}/columns", headers=h["default"])  # unreadable: its line
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("bad.jsonl:2")

    r = post({"columns": {"prompt": "q_text", "completion": "reply_text"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": f["id"], "object": "file.columns", "status": "processed", "kind": "sft",
                        "columns": {"prompt": "q_text", "completion": "reply_text"}}
    assert client.get(f"/v1/files/{f['id']}", headers=h["default"]).json()["status"] == "processed"
    rep = client.get(f"/studio/api/files/{f['id']}/inspect", headers=h["default"]).json()
    assert rep["splits"][0]["count"] == 3  # inspected with the mapping
    assert "qa.csv" in client.get("/studio/f/new", headers=h["default"]).text  # offered to a job

    ok = _upload(client, h["default"], "ok.jsonl", b'{"prompt": "a", "completion": "b"}\n')
    r = client.post(f"/studio/api/files/{ok['id']}/columns", json={"columns": {"prompt": "completion"}},
                    headers=h["default"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "file_needs_no_mapping"


def test_a_mapped_file_trains_with_its_columns(tmp_path, tiny_model_dir):
    """The job from a mapped file writes the mapping as its run's data.columns (a validation file's own
    mapping as its spec's), and the config reads every record: the worker would train on it."""
    from tunelab.config import from_dict
    from tunelab.data.dataset import load_splits
    from tunelab.serve.files_api import ServingFiles
    from tunelab.serve.job_runner import JobRunner, job_dir
    from tunelab.serve.jobs_api import ServingJobs
    from tunelab.serve.protocol.jobs import FineTuningJobCreate
    from tunelab.serve.state import ServeState

    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", base=str(tiny_model_dir))
    state.jobs_runner = None
    files = ServingFiles(state, "default")
    train = files.upload(io.BytesIO(QA_CSV), "qa.csv", "fine-tune")
    val = files.upload(io.BytesIO(b'{"frage": "x?", "antwort": "y."}\n'), "val.jsonl", "fine-tune")
    assert train.status == val.status == "error"
    files.map_columns(train.id, {"prompt": "q_text", "completion": "reply_text"})
    files.map_columns(val.id, {"prompt": "frage", "completion": "antwort"})
    job = ServingJobs(state, "default").create(FineTuningJobCreate.model_validate(
        {"model": state.base, "training_file": train.id, "validation_file": val.id}))
    from tunelab.serve import jobs_db

    row = jobs_db.get_job(jobs_db.conn(state.db_path), "default", job.id)
    JobRunner(state)._prepare(row)
    assert jobs_db.get_job(jobs_db.conn(state.db_path), "default", job.id)["status"] == "queued"
    cfg = json.loads((job_dir(state, job.id) / "config.json").read_text())
    assert cfg["data"]["columns"] == {"prompt": "q_text", "completion": "reply_text"}
    assert cfg["data"]["validation"][0]["columns"] == {"prompt": "frage", "completion": "antwort"}
    train_ex, val_ex = load_splits(from_dict(cfg, source="job"))
    assert [e.messages[0]["content"] for e in train_ex][:1] == ["What is 2 | 3?"] and len(val_ex) == 1


def test_job_config_columns_default_and_same_mapping(tmp_path):
    from tunelab.serve.job_runner import job_config
    from tunelab.serve.jobs_api import hyperparameters

    job = {"hyperparameters": hyperparameters({}, "supervised"), "method": {"type": "supervised"}, "model": "m",
           "seed": 1, "run_name": "ft-x"}
    t, v = tmp_path / "t.csv", tmp_path / "v.csv"
    plain = job_config(job, t, v, tmp_path / "runs", [])
    assert "columns" not in plain["data"] and plain["data"]["validation"] == str(v)  # as before
    same = {"prompt": "q", "completion": "a"}
    cfg = job_config(job, t, v, tmp_path / "runs", [], {"train": same, "validation": same})
    assert cfg["data"]["columns"] == same and cfg["data"]["validation"] == str(v)
    cfg = job_config(job, t, v, tmp_path / "runs", [], {"train": same, "validation": {}})
    assert cfg["data"]["validation"] == [{"path": str(v), "columns": {}}]  # a known-format validation file
