"""The Studio in a real browser (headless Chromium through Playwright) against a real server on the
tiny Llama: the key typed once, upload and inspect a dataset, start a fine-tune, watch its chart grow
over SSE, refresh mid-job and get the same view back, open the run and overlay its curve with another
run's, build a knowledge base and ask it (a numbered citation that links to its chunk), chat side by
side (base and tuned answer differently), export a GGUF. Marked `browser` (run by .ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
TRAIN = "examples/data/tunebot/train.jsonl"
VAL = "examples/data/tunebot/validation.jsonl"
DOC = """# Tolvaris ferries

## Timetable

The ferry from Hallowport to Kessling leaves at 07:40 every morning and costs 12 tolv marks.

## The lighthouse

The Cape Senn lighthouse is 47 metres tall and was built in 1868.
"""


def _lines(path: str, n: int, out: Path) -> Path:
    out.write_text("".join(Path(path).read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return out


def _points(page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


def _ready(page, timeout: float = 30_000) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=timeout)


def test_studio_flow(browser_page, studio_server, tmp_path):  # the browser first: a skip costs nothing
    s, page = studio_server, browser_page
    page.set_default_timeout(30_000)

    # the key: asked once, kept for the session
    page.goto(s.url + "/")
    page.wait_for_selector("#keybox:not([hidden])")
    page.fill("#apikey", "tl-wrong")
    page.click("#keybox button")
    page.wait_for_function("document.getElementById('keyerr').textContent.includes('Incorrect API key')")
    page.fill("#apikey", s.key)
    page.click("#keybox button")
    _ready(page)
    assert page.is_hidden("#keybox")

    # 1-2. upload a dataset, inspect it
    page.goto(s.url + "/datasets")
    _ready(page)
    assert page.is_hidden("#keybox")  # the key was kept
    page.set_input_files("#upfile", str(_lines(TRAIN, 16, tmp_path / "train.jsonl")))
    page.click("#upload button")
    page.wait_for_url(re.compile(r"/datasets/file-"))
    page.wait_for_selector("#example .learn", timeout=60_000)
    assert page.inner_text("table tbody tr td:nth-child(2)") == "16"  # 16 train examples
    assert page.locator(".hist li").count() == 10
    file_id = page.url.rsplit("/", 1)[1]
    page.goto(s.url + "/datasets")
    _ready(page)
    page.set_input_files("#upfile", str(_lines(VAL, 2, tmp_path / "val.jsonl")))
    page.click("#upload button")
    page.wait_for_url(re.compile(r"/datasets/file-"))
    val_id = page.url.rsplit("/", 1)[1]

    # 3. start a fine-tune: the memory estimate is live, a bad value is shown next to its field
    page.goto(f"{s.url}/new?file={file_id}")
    _ready(page)
    page.wait_for_selector("#fit")
    assert "fits" in page.inner_text("#fit") or "Will not fit" in page.inner_text("#fit")
    before = page.inner_text("#fit")
    page.fill("#batch_size", "64")
    page.wait_for_function(f"document.getElementById('fit') && document.getElementById('fit').textContent != {before!r}")
    page.fill("#batch_size", "4")
    page.select_option("#validation_file", val_id)
    page.fill("#model", "no-such-model")
    page.click("#start")
    page.wait_for_selector("#model + .field-err")  # the API's 404, next to the field it names
    assert "No such model: 'no-such-model'" in page.inner_text("#model + .field-err")
    page.wait_for_selector("#estimate .err")  # the estimate cannot read that model either
    page.fill("#model", s.state.base)
    page.fill("#n_epochs", "8")
    page.fill("#lr_mult", "50")
    page.fill("#suffix", "ui")
    page.click("#start")
    page.wait_for_url(re.compile(r"/jobs/ftjob-"), timeout=30_000)
    _ready(page)

    # 4 + 8. the chart grows over SSE; a refresh mid-job shows the same view and keeps growing
    page.wait_for_function("+document.getElementById('job-chart').dataset.points >= 2", timeout=120_000)
    seen = _points(page, "#job-chart")
    assert page.get_attribute("#job-status", "data-status") == "running"  # 8 epochs: the refresh is mid-job
    page.reload()
    _ready(page)
    page.wait_for_function(f"+document.getElementById('job-chart').dataset.points >= {seen}", timeout=30_000)
    page.wait_for_selector("#job-status[data-status='succeeded']", timeout=180_000)
    final = _points(page, "#job-chart")
    assert final > seen, (seen, final)
    assert page.locator("#job-log li").count() >= 3
    assert float(page.get_attribute("#job-progress", "value")) == 1.0
    assert page.is_hidden("#job-cancel")
    run = page.get_attribute("#job-result a", "href").rsplit("/", 1)[1]
    assert run.startswith("ft-ui-")

    # 5. the run page draws its curve (training + validation), the runs page overlays two runs
    page.click("#job-result a")
    _ready(page)
    page.wait_for_selector("[data-chart-runs] canvas")
    assert _points(page, "[data-chart-runs]") == final  # the same points as the job's live chart
    assert "Validation loss" in page.inner_text("main") or "validation" in page.inner_text("main")
    page.click("button[data-export='gguf']")
    page.wait_for_selector(".downloads a", timeout=120_000)
    assert page.inner_text(".downloads a").endswith(".gguf")
    with page.expect_download() as dl:
        page.click(".downloads a")
    assert Path(dl.value.path()).read_bytes()[:4] == b"GGUF"
    page.goto(s.url + "/runs")
    _ready(page)
    page.check(f"input[value='{run}']")
    page.check("input[value='seed']")
    page.click("#overlay button")
    page.wait_for_url(re.compile(r"/compare\?"))
    _ready(page)
    page.wait_for_selector("[data-chart-runs] canvas")
    seed_points = 4  # tiny_run: 4 steps, no evaluation
    assert _points(page, "[data-chart-runs]") == final + seed_points

    # 7. a knowledge base from an upload; its answer cites a numbered chunk that the link opens
    doc = tmp_path / "ferries.md"
    doc.write_text(DOC, encoding="utf-8")
    page.goto(s.url + "/kb")
    _ready(page)
    page.fill("#kb-name", "notes")
    page.set_input_files("#kb-files", str(doc))
    page.click("#kb-create button")
    page.wait_for_url(re.compile(r"/kb/notes$"), timeout=120_000)
    _ready(page)
    assert page.locator(".chunks li").count() >= 2
    page.fill("#question", "When does the ferry to Kessling leave?")
    page.select_option("#ask-model", run)
    page.click("#kb-ask button")
    page.wait_for_selector("#kb-answer .cites a", timeout=60_000)
    first = page.locator("#kb-answer .cites a").first
    assert first.inner_text().startswith("[1] ferries.md")
    target = first.get_attribute("href")
    first.click()
    assert page.evaluate("location.hash") == target
    assert "07:40" in page.inner_text(f"li{target}")  # the top chunk is the timetable

    # 6. chat side by side: base, tuned, tuned + the knowledge base
    page.goto(s.url + "/chat")
    _ready(page)
    page.select_option("#model0", s.state.base)
    page.select_option("#model1", run)
    page.select_option("#model2", run)
    page.select_option("#kb2", "notes")
    page.check("[name=on2]")
    page.fill("#max_tokens", "12")
    page.fill("#prompt", "Hello, what do you do?")
    page.click("#chat button[type=submit]")
    page.wait_for_function("document.querySelectorAll('.answer[data-done]').length == 3", timeout=120_000)
    texts = [page.inner_text(f".answer[data-col='{i}'] .text") for i in range(3)]
    errors = [page.inner_text(f".answer[data-col='{i}'] .err") for i in range(3)]
    assert errors == ["", "", ""], errors
    assert texts[0] and texts[1] and texts[0] != texts[1], texts
    assert page.locator(".answer[data-col='2'] .cites li").count() >= 1
    assert page.js_errors == []
