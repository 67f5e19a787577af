"""`tunelab rag ...` end to end through the real entry point (one-line errors, exit codes)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lancedb", reason="the rag extra is not installed")

from tunelab.cli.main import run


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        run(list(map(str, args)))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_index_query_eval_roundtrip(capsys, tmp_path, monkeypatch, docs):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    code, out, _ = cli(capsys, "rag", "index", docs, "--kb", "demo", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["files"] == 5 and rep["furniture_dropped"] == 2  # page.html's <nav> and <footer>
    assert (tmp_path / "home" / "kb" / "demo" / "manifest.json").exists()
    code, out, _ = cli(capsys, "rag", "index", docs, "--kb", "demo")
    assert code == 0 and "5 unchanged" in out and "0 chunks embedded" in out and "0 navigation blocks dropped" in out

    code, out, _ = cli(capsys, "rag", "query", "demo", "How do I prune roses?", "-k", "2")
    assert code == 0 and out.startswith("[1] score 0.") and "guide.md § Roses" in out.splitlines()[0]
    code, out, _ = cli(capsys, "rag", "query", "demo", "How do I prune roses?", "-k", "2", "--hybrid", "--json")
    hits = json.loads(out)
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["section"] == "Roses"
    code, out, _ = cli(capsys, "rag", "query", "demo", "How do I prune roses?", "--cutoff", "0.99")
    assert code == 0 and out.strip() == "no chunk matched above similarity 0.99"

    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What tyre pressure?", "source": "manual.rst"}) + "\n")
    code, out, _ = cli(capsys, "rag", "eval", "demo", "--questions", qa, "-k", "3")
    res = json.loads(out)
    assert code == 0 and res["recall@3"] == 1.0 and res["mrr"] == 1.0 and "per_question" not in res


def test_index_summary_counts_furniture_and_keep_furniture_rebuilds(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    d = tmp_path / "site"
    d.mkdir()
    (d / "keys.md").write_text("# Keys\n\nRotate the keys every month with the admin tool.\n\n"
                               "Chapter 11. Data conversion\nChapter 12. Programming\nChapter 13. Tips\n\n"
                               "« Previous | Up | Next »\n")
    code, out, _ = cli(capsys, "rag", "index", d, "--kb", "site")
    assert code == 0 and "1 new" in out and "2 navigation blocks dropped" in out
    code, out, _ = cli(capsys, "rag", "query", "site", "data conversion chapter", "-k", "5", "--json")
    assert [h["text"] for h in json.loads(out)] == ["Rotate the keys every month with the admin tool."]
    code, out, _ = cli(capsys, "rag", "index", d, "--kb", "site", "--keep-furniture")
    assert code == 0 and "1 new" in out and "0 navigation blocks dropped" in out  # a setting: rebuilt
    code, out, _ = cli(capsys, "rag", "query", "site", "data conversion chapter", "-k", "5", "--json")
    assert "Chapter 11. Data conversion" in "".join(h["text"] for h in json.loads(out))


def test_errors_are_one_line_with_exit_2(capsys, tmp_path, monkeypatch, docs):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    code, out, err = cli(capsys, "rag", "query", "ghost", "q")
    assert code == 2 and err.startswith("error: kb: unknown knowledge base 'ghost'") and err.count("\n") == 1
    code, _, err = cli(capsys, "rag", "index", tmp_path / "missing.txt", "--kb", "x")
    assert code == 2 and err == f"error: {tmp_path / 'missing.txt'}: no such file or folder\n"
    code, _, err = cli(capsys, "rag", "index", docs)
    assert code == 2 and "give --kb NAME or --dir FOLDER" in err

    cli(capsys, "rag", "index", docs / "guide.md", "--kb", "small")
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q", "source": "guide.md"}\n{"question": "q2"\n')
    code, _, err = cli(capsys, "rag", "eval", "small", "--questions", qa)
    assert code == 2 and err.startswith(f"error: {qa}:2: invalid JSON") and err.count("\n") == 1
