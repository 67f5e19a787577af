"""The per-example `keywords` metric: each example's own key facts must all appear in the reply
(case-folded, whitespace collapsed); the data field's checks and the CLI path on a tiny model."""

from __future__ import annotations

import json

import pytest

from tunelab.cli.main import run as tunelab
from tunelab.errors import TunelabError
from tunelab.eval import text_metrics
from tunelab.eval.compare import load_items


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def test_score_needs_every_keyword_case_folded():
    kw = ["Hallowport", "1743"]
    assert text_metrics.score("It was HALLOWPORT,  in 1743.", "", ["keywords"], keywords=kw) == {"keywords": 1.0}
    assert text_metrics.score("Hallowport, long ago.", "", ["keywords"], keywords=kw) == {"keywords": 0.0}
    assert text_metrics.has_all_keywords("3 hours\n40   minutes", ["40 minutes"]) == 1.0  # whitespace collapsed
    assert text_metrics.has_all_keywords("18240 people", ["18,240"]) == 0.0  # no number normalisation


def test_load_items_reads_keywords(tmp_path):
    f = _write(tmp_path / "q.jsonl", [_chat("Capital?", "Hallowport.", keywords="Hallowport"),
                                      _chat("Founded?", "In 1743.", keywords=["1743", " Vaskel "])])
    items = load_items(f)
    assert [it.keywords for it in items] == [["Hallowport"], ["1743", "Vaskel"]]
    assert load_items(_write(tmp_path / "n.jsonl", [_chat("a", "b")]))[0].keywords is None


@pytest.mark.parametrize("rows, fragment, line", [
    ([_chat("a", "b", keywords=["x"]), _chat("c", "d")], "no 'keywords' while others have", 2),
    ([_chat("a", "b", keywords=[])], "must be a non-empty string or a list", 1),
    ([_chat("a", "b", keywords=["x", 3])], "must be a non-empty string or a list", 1),
    ([_chat("a", "b", keywords="  ")], "must be a non-empty string or a list", 1),
])
def test_bad_keywords_name_the_line(tmp_path, rows, fragment, line):
    f = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(TunelabError) as e:
        load_items(f)
    assert fragment in e.value.message and e.value.where.endswith(f"bad.jsonl:{line}")


def test_drop_keywords():
    chosen = text_metrics.select(None, None, None)
    assert "keywords" in chosen
    assert "keywords" not in text_metrics.drop_keywords(chosen, None, False, "d.jsonl")
    assert text_metrics.drop_keywords(chosen, None, True, "d.jsonl") == chosen
    with pytest.raises(TunelabError, match="needs a 'keywords' field"):
        text_metrics.drop_keywords(["keywords"], ["keywords"], False, "d.jsonl")


def test_cli_scores_each_example_with_its_own_keywords(tmp_path, tiny_model_dir, capsys):
    rows = [_chat(q, "ref", keywords=kw) for q, kw in
            [("hello there", ["e"]), ("what is lora", ["zzqx"]), ("thanks", ["a", "e"]), ("why", ["E"])]]
    data = _write(tmp_path / "kw.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        tunelab(["eval", str(tiny_model_dir), "--data", str(data), "--metrics", "keywords,length",
                 "--max-new-tokens", "6", "--out", str(out)])
    assert e.value.code == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    label = res["models"][0]["label"]
    got, want = [], []
    for ex, row in zip(res["examples"], rows):
        reply = ex["models"][label]["reply"].casefold()
        want.append(float(all(k.casefold() in reply for k in row["keywords"])))
        got.append(ex["models"][label]["scores"]["keywords"])
    assert got == want and want[1] == 0.0
    assert res["models"][0]["metrics"]["keywords"]["value"] == pytest.approx(sum(want) / 4)
    assert "keywords" in (out / "report.md").read_text(encoding="utf-8")
    # asked for without the field: one line, exit 2
    plain = _write(tmp_path / "plain.jsonl", [_chat("hi", "ref")])
    with pytest.raises(SystemExit) as e:
        tunelab(["eval", str(tiny_model_dir), "--data", str(plain), "--metrics", "keywords", "--out", str(out)])
    assert e.value.code == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "metric keywords needs a 'keywords' field" in err[0]
