"""A CSV of other column names, from the empty "New fine-tune" page to a finished run, in a real browser
(headless Chromium through Playwright) against a real server on the tiny Llama: the page explains what to
do without a file and uploads one; the file goes to its column-mapping step (the first records shown);
the columns are mapped, a job starts from it and succeeds; its run trained with the mapping as
`data.columns`, its report's table keeps a prompt holding `|` in one cell, and its chart draws training
and validation in distinct colours with distinct legend boxes, whole step ticks and the base model's
validation loss at step 0. Marked `browser` (run by .ci/run)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser
TRAIN = "examples/data/tunebot/train.jsonl"
VAL = "examples/data/tunebot/validation.jsonl"
PIPE_PROMPT = "Is r | alpha the same as r * alpha?"


def _csv(path: str, n: int, out: Path, extra: list[tuple[str, str]] = ()) -> Path:
    """The first `n` conversations of a messages JSONL as a CSV with columns nr, frage, antwort."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines()[:n]:
        m = json.loads(line)["messages"]
        rows.append((m[0]["content"], m[1]["content"]))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["nr", "frage", "antwort"])
    for i, (q, a) in enumerate([*extra, *rows]):
        w.writerow([i + 1, q, a])
    out.write_text(buf.getvalue(), encoding="utf-8")
    return out


def _ready(page, timeout: float = 30_000) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=timeout)


def _map(page, s) -> str:
    """On a file's mapping page: frage -> prompt, antwort -> completion; returns the file id."""
    page.wait_for_url(re.compile(r"/datasets/file-[0-9a-f]+/columns$"))
    _ready(page)
    page.wait_for_selector("#columns")
    assert page.input_value("#col-format") == "prompt_completion"
    page.select_option("#col-prompt", "frage")
    page.select_option("#col-completion", "antwort")
    page.click("#col-save")
    page.wait_for_url(re.compile(r"/new\?file=file-"))
    _ready(page)
    return page.url.rsplit("=", 1)[1]


def test_a_csv_of_other_columns_is_mapped_and_trained(browser_page, studio_server, tmp_path):
    s, page = studio_server, browser_page
    page.set_default_timeout(30_000)
    page.goto(s.url + "/")
    page.wait_for_selector("#keybox:not([hidden])")
    page.fill("#apikey", s.key)
    page.click("#keybox button")
    _ready(page)

    # New fine-tune with no file: an explanation and the upload itself
    page.goto(s.url + "/new")
    _ready(page)
    text = page.inner_text("main")
    assert "No training file yet" in text and "which column" in text and "question,answer" in text
    page.set_input_files("#upfile", str(_csv(TRAIN, 16, tmp_path / "fragen.csv")))
    page.click("#upload button")

    # the mapping step: the first records, a role left empty is said next to its field, then the mapping
    page.wait_for_url(re.compile(r"/columns$"))
    _ready(page)
    page.wait_for_selector("#columns")
    assert page.locator("table.preview tbody tr").count() == 5
    assert page.inner_text("table.preview thead").split() == ["nr", "frage", "antwort"]
    assert "Not read as it is" in page.inner_text("main")
    page.select_option("#col-prompt", "")
    page.click("#col-save")
    page.wait_for_selector("#col-prompt + .field-err")
    train_id = _map(page, s)
    assert page.input_value("#training_file") == train_id

    # a validation file of the same columns, one prompt holding a pipe
    page.goto(s.url + "/datasets")
    _ready(page)
    page.set_input_files("#upfile", str(_csv(VAL, 2, tmp_path / "val.csv", [(PIPE_PROMPT, "No: alpha / r scales.")])))
    page.click("#upload button")
    val_id = _map(page, s)
    page.goto(f"{s.url}/new?file={train_id}")
    _ready(page)
    page.select_option("#validation_file", val_id)
    page.fill("#n_epochs", "2")
    page.fill("#batch_size", "4")
    page.fill("#suffix", "csv")
    overrides = list(s.state.job_overrides)  # the report samples the first validation prompt (a table row)
    s.state.job_overrides = [*overrides, "eval.from_validation=1", "eval.max_new_tokens=4"]
    try:
        page.click("#start")
        page.wait_for_url(re.compile(r"/jobs/ftjob-"))
        _ready(page)
        page.wait_for_selector("#job-status[data-status='succeeded']", timeout=240_000)
    finally:
        s.state.job_overrides = overrides
    run = page.get_attribute("#job-result a", "href").rsplit("/", 1)[1]
    cfg = yaml.safe_load((s.state.tenant_runs("default") / run / "config.yaml").read_text())
    assert cfg["data"]["columns"] == {"prompt": "frage", "completion": "antwort"}

    # the run: the report's table keeps the pipe in its cell; the chart
    page.click("#job-result a")
    _ready(page)
    page.wait_for_selector("[data-chart-runs] canvas")
    cells = page.locator("#main td").all_inner_texts()
    assert PIPE_PROMPT in cells, cells  # one cell, no backslash
    assert not any(c.endswith("\\") or "\\|" in c for c in cells)
    chart = "[data-chart-runs]"
    assert page.get_attribute(chart, "data-base") == "1"  # the base model's validation loss, at step 0
    ticks = [float(t) for t in page.get_attribute(chart, "data-xticks").split(",")]
    assert ticks and all(t == int(t) for t in ticks) and min(ticks) <= 0, ticks
    markers = page.evaluate("""() => [...document.querySelectorAll('[data-chart-runs] .u-legend .u-series')]
        .filter((tr) => tr.querySelector('.u-marker') && tr.querySelector('.u-label').textContent !== 'step')
        .map((tr) => { const st = getComputedStyle(tr.querySelector('.u-marker'));
                       return [tr.querySelector('.u-label').textContent, st.borderTopColor, st.borderTopStyle,
                               st.backgroundColor]; })""")
    by = {m[0]: m[1:] for m in markers}
    assert set(by) == {"train", "validation", "base model (validation, step 0)"}, markers
    assert by["train"][0] != by["validation"][0]  # distinct colours
    assert (by["train"][1], by["validation"][1]) == ("solid", "dashed")  # distinct boxes
    assert by["base model (validation, step 0)"] != by["validation"]
    assert page.js_errors == []
