"""`tunelab eval` on a tiny LoRA run and its base: results.json shape and values, NLL = reply_nll,
the cache, the judge against a scripted OpenAI-compatible server on 127.0.0.1, report.html, errors."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunelab.cli.main import run as tunelab

SIG = "—TuneBot"


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        tunelab(["eval", *map(str, args)])
    return e.value.code


def one_line_error(capsys, fragment: str) -> None:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, tiny_run):
    tmp = tmp_path_factory.mktemp("evalcmd")
    run_dir = tiny_run(tmp, "tiny", n_train=8, n_val=5, steps=2, eval_extra={"max_new_tokens": 6})
    data = tmp / "data" / "val.jsonl"  # the run's 5 validation examples are the evaluation data
    out = tmp / "out"
    assert cli(run_dir, "--base", "--data", data, "--contains", "e", "--regex", r"\w+",
               "--out", out) == 0
    return {"tmp": tmp, "run": run_dir, "data": data, "out": out, "model": tiny_model_dir}


def test_results_shape_and_values(setup):
    res = json.loads((setup["out"] / "results.json").read_text(encoding="utf-8"))
    assert [m["label"] for m in res["models"]] == ["tiny", "tiny (base)"]
    assert res["n_examples"] == 5 and len(res["examples"]) == 5
    assert set(res["metrics"]) == {"nll", "perplexity", "exact", "contains", "regex", "rouge_l", "chrf", "length"}
    for m in res["models"]:
        replies = [ex["models"][m["label"]]["reply"] for ex in res["examples"]]
        assert m["max_new_tokens"] == 6  # the run's eval.max_new_tokens
        assert m["metrics"]["contains"]["value"] == pytest.approx(sum("e" in r for r in replies) / 5)
        assert m["metrics"]["regex"]["value"] == pytest.approx(sum(bool(re.search(r"\w+", r)) for r in replies) / 5)
        assert m["metrics"]["length"]["value"] == pytest.approx(sum(len(r.split()) for r in replies) / 5)
        for name, s in m["metrics"].items():
            assert s["low"] <= s["value"] + 1e-9 and s["value"] <= s["high"] + 1e-9, name
    refs = [json.loads(x)["messages"][-1]["content"] for x in setup["data"].read_text().splitlines()]
    assert [ex["reference"] for ex in res["examples"]] == refs
    assert (setup["out"] / "report.md").read_text().count("| tiny") == 2


def test_nll_equals_reply_nll(setup):
    import math

    from tunelab.data.formats import to_examples
    from tunelab.data.sources import read_records
    from tunelab.data.tokenize import tokenize_all
    from tunelab.infer.generate import Generator
    from tunelab.losses import reply_nll

    res = json.loads((setup["out"] / "results.json").read_text(encoding="utf-8"))
    for m, base in zip(res["models"], (False, True)):
        gen = Generator.from_run(setup["run"], base=base)
        ex = to_examples(read_records(setup["data"]), "auto", "sft")
        toks, _ = tokenize_all(ex, gen.template, gen.tokenizer, 256, "right", "last")
        want = reply_nll(gen.model, toks, gen.tokenizer.pad_token_id, 4)
        assert m["metrics"]["nll"]["value"] == pytest.approx(want, rel=1e-5)
        assert m["metrics"]["perplexity"]["value"] == pytest.approx(math.exp(want), rel=1e-5)


def test_cache_is_used_and_a_new_model_runs_alone(setup, monkeypatch):
    from tunelab.eval.compare import Contender

    loaded = []
    real = Contender.load

    def spy(self):
        loaded.append(self.label)
        return real(self)

    monkeypatch.setattr(Contender, "load", spy)
    out = setup["tmp"] / "out2"
    import shutil

    shutil.copytree(setup["out"] / "cache", out / "cache")
    assert cli(setup["run"], "--base", setup["model"], "--data", setup["data"], "--contains", "e",
               "--regex", r"\w+", "--out", out) == 0
    assert loaded == [str(setup["model"])]  # the run and its base came from the cache
    a = json.loads((setup["out"] / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert b["cache"]["hits"] == 2 * 2 * 5  # 2 cached models x (nll + reply) x 5 examples
    assert b["models"][:2] == a["models"]


class _Judge(BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"]
        _Judge.calls.append(text)
        m = re.search(r"Reply A:\n(.*)\n\nReply B:\n(.*)\n\nWhich", text, flags=re.S)
        verdict = "tie" if m is None else ("A" if len(m.group(1)) >= len(m.group(2)) else "B")  # longer wins
        out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_judge_both_orders_against_a_scripted_server(setup):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    _Judge.calls.clear()
    try:
        out = setup["tmp"] / "judged"
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        assert cli(setup["run"], "--base", "--data", setup["data"], "--out", out, "--cache", setup["out"] / "cache",
                   "--judge", url, "--judge-model", "scripted") == 0
    finally:
        server.shutdown()
        server.server_close()
        th.join(timeout=10)
    res = json.loads((out / "results.json").read_text())
    assert len(_Judge.calls) == 1 + 2 * 5  # the reachability check, then both orders per example
    want = []
    for ex in res["examples"]:
        x, y = len(ex["models"]["tiny"]["reply"]), len(ex["models"]["tiny (base)"]["reply"])
        want.append("win" if x > y else "loss" if x < y else "tie")  # equal: A in both orders -> a tie
    pair = res["judge"]["pairs"]["tiny (base)"]
    assert [p["outcome"] for p in pair["per_example"]] == want
    for k in ("win", "tie", "loss"):
        assert pair["rates"][k]["value"] == pytest.approx(want.count(k) / 5)


def test_unreachable_judge_is_one_line_before_generating(setup, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    out = setup["tmp"] / "nojudge"
    assert cli(setup["run"], "--base", "--data", setup["data"], "--out", out, "--judge",
               f"http://127.0.0.1:{port}/v1", "--judge-model", "m") == 2
    one_line_error(capsys, "did not answer")
    assert not out.exists()


def test_html_is_self_contained(setup):
    page = (setup["out"] / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 8 + 2  # 8 metric charts, 2 histograms
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)  # nothing fetched from elsewhere
    assert "id=dis" in page and page.count('<tr class="dis">') + page.count('<tr class="agree">') == 5


def test_bad_input_is_one_line(setup, capsys, tmp_path):
    nore = tmp_path / "cls.jsonl"
    nore.write_text('{"text": "hi", "label": "a"}\n')
    assert cli(setup["run"], "--data", nore, "--out", tmp_path / "o") == 2
    one_line_error(capsys, "no assistant reply to use as the reference")
    reward = tmp_path / "rw"
    reward.mkdir()
    (reward / "config.yaml").write_text("task: reward\n")
    (reward / "DONE").write_text("")
    assert cli(reward, "--data", setup["data"], "--out", tmp_path / "o") == 2
    one_line_error(capsys, "is a reward run")
    assert cli(setup["run"], "--data", setup["data"], "--metrics", "bleu", "--out", tmp_path / "o") == 2
    one_line_error(capsys, "unknown metric")


def test_kb_adds_rag_variants_that_send_the_passages(setup, tmp_path):
    pytest.importorskip("lancedb", reason="the rag extra is not installed")
    from tunelab.rag import index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text("# Attention\n\nAn attention mask hides padding tokens from the model.\n")
    index([docs], directory=tmp_path / "kb")
    out = tmp_path / "out"
    assert cli(setup["run"], "--data", setup["data"], "--kb", "faq", "--kb-dir", tmp_path / "kb", "-k", "1",
               "--metrics", "nll,length", "--out", out, "--cache", setup["out"] / "cache") == 0
    res = json.loads((out / "results.json").read_text())
    assert [m["label"] for m in res["models"]] == ["tiny", "tiny+rag"]
    assert res["cache"]["hits"] == 5 + 5  # the plain run's NLL and replies came from the cache; +rag is new
    for ex in res["examples"]:
        assert "prompt_sent" not in ex["models"]["tiny"]
        sent = ex["models"]["tiny+rag"]["prompt_sent"]
        assert "attention mask hides padding" in sent and ex["prompt"].split("user: ", 1)[1] in sent
    nll = [m["metrics"]["nll"]["value"] for m in res["models"]]
    assert nll[0] != nll[1]  # the passages change what the model conditions on


def test_data_of_other_columns_reads_with_columns_or_the_runs_own(setup, capsys, tmp_path):
    """`--columns prompt=q,completion=a`, or without it the run's own data.columns (when the file has those
    fields): a CSV of other column names is evaluated as the same examples in messages form are."""
    import csv
    import shutil

    import yaml

    convs = [json.loads(x)["messages"] for x in setup["data"].read_text().splitlines()]
    assert all(len(m) == 2 for m in convs)  # one user turn, one reply each
    data = tmp_path / "qa.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["q", "a"])
        w.writerows([(m[0]["content"], m[1]["content"]) for m in convs])
    out = tmp_path / "o1"
    assert cli(setup["run"], "--data", data, "--out", out) == 2  # the fields are no known format
    capsys.readouterr()
    assert cli(setup["run"], "--data", data, "--columns", "prompt=q,completion=a", "--metrics", "nll",
               "--out", out) == 0
    res = json.loads((out / "results.json").read_text())
    refs = [m[1]["content"] for m in convs]
    assert [ex["reference"] for ex in res["examples"]] == refs
    want = json.loads((setup["out"] / "results.json").read_text())["models"][0]["metrics"]["nll"]["value"]
    assert res["models"][0]["metrics"]["nll"]["value"] == pytest.approx(want)

    mapped = tmp_path / "mapped"  # the run trained with data.columns: eval reads --data with them
    shutil.copytree(setup["run"], mapped)
    cfg = yaml.safe_load((mapped / "config.yaml").read_text())
    cfg["data"]["columns"] = {"prompt": "q", "completion": "a"}
    (mapped / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli(mapped, "--data", data, "--metrics", "nll", "--out", tmp_path / "o2") == 0
    said = [x for x in capsys.readouterr().out.splitlines() if x.startswith("--data read with the run's data.columns: ")]
    assert len(said) == 1 and sorted(said[0].split(": ", 1)[1].split(", ")) == ["completion=a", "prompt=q"]
    res = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert res["models"][0]["metrics"]["nll"]["value"] == pytest.approx(want)
    assert cli(mapped, "--data", setup["data"], "--metrics", "nll", "--out", tmp_path / "o3") == 0  # as it is
    assert cli(setup["run"], "--data", data, "--columns", "prompt", "--out", out) == 2
    one_line_error(capsys, "--columns takes OURS=THEIRS pairs")
