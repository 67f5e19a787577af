"""tunelab data synth against a scripted OpenAI-compatible server: retries, failures, filters, dedupe, resume."""

from __future__ import annotations

import json

import pytest
from synth_server import ScriptedServer

from tunelab.synth import Filters, OpenAITeacher, SynthOptions, read_items, run_synth, stable_id
from tunelab.synth.prompts import clean_reply
from tunelab.synth.store import JsonlLog, side_path
from tunelab.synth.teachers import backoff_delay
from tunelab.errors import TunelabError


def write_items(path, n, **extra):
    path.write_text("".join(json.dumps({"id": f"item-{i:03d}", "text": f"Output number item-{i:03d}.", **extra}) + "\n"
                            for i in range(n)))
    return path


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def teacher(server, **kw):
    kw = {"timeout": 0.5, "max_attempts": 4, "backoff": 0.001, "max_backoff": 0.01, **kw}
    return OpenAITeacher(server.base_url, "scripted", None, **kw)


def test_every_item_once_with_retries_and_failures(tmp_path):
    inp = write_items(tmp_path / "in.jsonl", 12)
    script = {"item-001": ["429", "ok"], "item-002": ["500", "500", "ok"], "item-003": ["badjson", "ok"],
              "item-004": ["slow", "ok"], "item-005": ["nochoices", "ok"], "item-006": ["500"],
              "item-007": ["refuse"], "item-008": ["empty"]}
    out = tmp_path / "pairs.jsonl"
    with ScriptedServer(script, slow_s=1.5) as srv:
        stats = run_synth(inp, out, teacher(srv), SynthOptions(mode="reverse", concurrency=3))
        calls = dict(srv.calls)
    # 12 items, 1 request each, plus the retries: 1 + 2 + 1 + 1 + 1 + 3 (item-006: 4 attempts in all)
    assert sum(calls.values()) == 12 + 9
    assert calls["item-006"] == 4 and calls["item-002"] == 3 and calls["item-000"] == 1
    kept = {r["id"] for r in lines(out)}
    filtered = {r["id"]: r["reason"] for r in lines(side_path(out, "filtered"))}
    failed = {r["id"]: r for r in lines(side_path(out, "failed"))}
    assert filtered == {"item-007": "refusal", "item-008": "empty"}
    assert set(failed) == {"item-006"} and failed["item-006"]["attempts"] == 4 and "HTTP 500" in failed["item-006"]["error"]
    assert kept == {f"item-{i:03d}" for i in range(12)} - {"item-006", "item-007", "item-008"}
    assert len(lines(out)) == len(kept)  # no id written twice
    assert (stats.kept, stats.failed, sum(stats.filtered.values())) == (9, 1, 2)
    rec = next(r for r in lines(out) if r["id"] == "item-001")
    assert rec["messages"] == [{"role": "user", "content": "Generated text for item-001."},
                               {"role": "assistant", "content": "Output number item-001."}]  # reverse: output is the reply
    # usage summed over the 11 successful replies: 4 completion words each
    assert stats.completion_tokens == 11 * 4 and stats.prompt_tokens > 0
    meta = json.loads(side_path(out, "synth").read_text())
    assert meta["complete"] is False and meta["stats"]["kept"] == 9


def test_failed_items_are_retried_by_the_next_run(tmp_path):
    inp = write_items(tmp_path / "in.jsonl", 4)
    out = tmp_path / "pairs.jsonl"
    with ScriptedServer({"item-002": ["500", "500", "ok"]}) as srv:
        s1 = run_synth(inp, out, teacher(srv, max_attempts=2), SynthOptions(concurrency=2))
        assert (s1.kept, s1.failed) == (3, 1)
        s2 = run_synth(inp, out, teacher(srv, max_attempts=2), SynthOptions(concurrency=2))
        assert (s2.already_done, s2.kept, s2.failed) == (3, 1, 0)
        assert srv.calls["item-002"] == 3 and srv.total == 3 + 3  # done items were not asked again
    assert sorted(r["id"] for r in lines(out)) == [f"item-{i:03d}" for i in range(4)]
    assert not side_path(out, "failed").exists() or lines(side_path(out, "failed")) == []
    assert json.loads(side_path(out, "synth").read_text())["complete"] is True


def test_torn_last_line_is_cut_and_regenerated_once(tmp_path):
    inp = write_items(tmp_path / "in.jsonl", 6)
    out = tmp_path / "pairs.jsonl"
    with ScriptedServer() as srv:
        run_synth(inp, out, teacher(srv), SynthOptions(max_items=3, concurrency=1))
        with open(out, "ab") as f:  # a crash in the middle of writing item-003
            f.write(b'{"id": "item-003", "messages": [{"role": "us')
        stats = run_synth(inp, out, teacher(srv), SynthOptions(concurrency=2))
        assert srv.total == 6  # 3 + the 3 not yet done
    ids = [r["id"] for r in lines(out)]  # every line parses
    assert sorted(ids) == [f"item-{i:03d}" for i in range(6)] and len(ids) == len(set(ids))
    assert stats.repaired_bytes > 0 and stats.already_done == 3


def test_dedupe_and_filters(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"item-{i}", "text": "Same instruction"}) + "\n" for i in range(3))
                   + json.dumps({"id": "item-9", "text": "Another item-9"}) + "\n")
    out = tmp_path / "pairs.jsonl"
    with ScriptedServer({"?": ["same"]}) as srv:  # "?" = a prompt without an item key: the 3 identical ones
        stats = run_synth(inp, out, teacher(srv), SynthOptions(mode="respond", concurrency=1,
                                                               out_format="prompt_completion"))
    assert stats.kept == 2 and stats.filtered == {"duplicate": 2}
    assert [r["completion"] for r in lines(out)] == ["The same text.", "Generated text for item-9."]
    f = Filters(min_chars=5, max_chars=20)
    assert f.reason("abc", "x") == "too_short" and f.reason("a" * 21, "x") == "too_long"
    assert f.reason("As an AI, I won't", "x") == "refusal" and f.reason("Echo  THIS.", "echo, this") == "echo"
    assert f.reason("Write a haiku", "x") is None
    f = Filters()
    tpl = "Write the short request a user would type to get this:\n{input}"
    assert f.reason("I'm looking for the short request a user would type to get this.", "x", tpl) == "prompt_copy"
    assert f.reason("I'm looking for the short request a user would type.", "x", tpl) is None  # 7 words


def test_settings_mismatch_and_foreign_output_refused(tmp_path):
    inp = write_items(tmp_path / "in.jsonl", 2)
    out = tmp_path / "pairs.jsonl"
    with ScriptedServer() as srv:
        run_synth(inp, out, teacher(srv), SynthOptions())
        with pytest.raises(TunelabError, match="different settings"):
            run_synth(inp, out, teacher(srv), SynthOptions(mode="respond"))
        other = tmp_path / "other.jsonl"
        other.write_text('{"text": "not ours"}\n')
        with pytest.raises(TunelabError, match="not the output of a synth run"):
            run_synth(inp, other, teacher(srv), SynthOptions())
        s = run_synth(inp, out, teacher(srv), SynthOptions(mode="respond", overwrite=True))
        assert s.already_done == 0 and s.kept == 2


def test_unauthorized_stops_the_run(tmp_path):
    inp = write_items(tmp_path / "in.jsonl", 5)
    with ScriptedServer({f"item-{i:03d}": ["401"] for i in range(5)}) as srv:
        with pytest.raises(TunelabError, match="HTTP 401"):
            run_synth(inp, tmp_path / "p.jsonl", teacher(srv), SynthOptions(concurrency=1))
        assert srv.total == 1  # not retried


def test_items_ids_and_errors(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("one\n\ntwo\none\n")
    items, dupes = read_items(txt, "reverse")
    assert [i.id for i in items] == [stable_id("one"), stable_id("two")] and dupes == 1
    assert stable_id("one") == stable_id("one") != stable_id("one ")
    j = tmp_path / "a.jsonl"
    j.write_text('{"instruction": "Say hi", "output": "hi"}\n{"messages": [{"role": "user", "content": "q"}, '
                 '{"role": "assistant", "content": "a"}]}\n')
    items, _ = read_items(j, "augment")
    assert [(i.text, i.reply) for i in items] == [("Say hi", "hi"), ("q", "a")]
    j.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(TunelabError, match="used twice") as e:
        read_items(j, "reverse")
    assert e.value.where.endswith("a.jsonl:2")
    j.write_text('{"body": "x"}\n')
    with pytest.raises(TunelabError, match="no text field"):
        read_items(j, "respond")
    with pytest.raises(TunelabError, match="augment needs pairs"):
        read_items(txt, "augment")


def test_reply_cleanup_and_backoff():
    assert clean_reply("reverse", '  Request: "Draw a cat"  ') == "Draw a cat"
    assert clean_reply("respond", '"quoted answer"') == '"quoted answer"'
    assert [backoff_delay(k, 0.5, 30) for k in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_delay(10, 0.5, 30) == 30 and backoff_delay(1, 0.5, 30, retry_after=7) == 7
    assert backoff_delay(1, 0.5, 2, retry_after=7) == 2


def test_repair_refuses_a_bad_middle_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(TunelabError, match="not a synth output line") as e:
        JsonlLog(p).repair()
    assert e.value.where.endswith("x.jsonl:2")
    p.write_text('{"id": "a"}\n{"id": "b", "messa\n')  # torn, newline included
    assert JsonlLog(p).repair() == len('{"id": "b", "messa\n') and p.read_text() == '{"id": "a"}\n'
