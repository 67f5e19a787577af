"""Tool-call scores on fixed predictions: values per example, means and bootstrap intervals, the tools file."""

from __future__ import annotations

import json

import pytest

from tunelab.data.tool_syntax import SYNTAXES
from tunelab.eval import tool_calls as tc


def call(name, args):
    return {"id": "call_x", "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}


WEATHER = [call("get_weather", {"city": "Oslo"})]


def test_exact_call_scores_one_everywhere():
    s = tc.score_example([call("get_weather", '{"city": "Oslo"}')], WEATHER)
    assert s == {"decision": 1.0, "function": 1.0, "call_exact": 1.0, "needed_exact": 1.0, "none_right": None,
                 "valid_json": 1.0}


def test_arguments_normalised_before_comparing():
    conv = [call("convert_units", {"value": 5, "from_unit": "miles", "to_unit": "kilometers"})]
    # other key order, 5.0 for 5, padding whitespace: the same call
    same = [call("convert_units", '{"to_unit": "kilometers ", "value": 5.0, "from_unit": "miles"}')]
    assert tc.score_example(same, conv)["call_exact"] == 1.0
    other_value = [call("convert_units", {"value": 6, "from_unit": "miles", "to_unit": "kilometers"})]
    s = tc.score_example(other_value, conv)
    assert (s["function"], s["call_exact"], s["needed_exact"]) == (1.0, 0.0, 0.0)
    as_string = [call("convert_units", {"value": "5", "from_unit": "miles", "to_unit": "kilometers"})]
    assert tc.score_example(as_string, conv)["call_exact"] == 0.0  # "5" is not 5
    missing = [call("convert_units", {"value": 5, "from_unit": "miles"})]
    assert tc.score_example(missing, conv)["call_exact"] == 0.0
    assert tc.score_example([call("get_weather", {"city": "True"})], [call("get_weather", {"city": True})])[
        "call_exact"] == 0.0


def test_wrong_function_and_parallel_calls_as_a_multiset():
    s = tc.score_example([call("get_calendar_events", {"date": "2027-02-03"})], WEATHER)
    assert (s["decision"], s["function"], s["call_exact"]) == (1.0, 0.0, 0.0)
    two = [call("get_weather", {"city": "Oslo"}), call("get_weather", {"city": "Kyoto"})]
    assert tc.score_example(list(reversed(two)), two)["call_exact"] == 1.0
    assert tc.score_example(two[:1], two)["function"] == 0.0  # one call of the two


def test_no_call_needed():
    assert tc.score_example([], []) == {"decision": 1.0, "function": 1.0, "call_exact": 1.0, "needed_exact": None,
                                        "none_right": 1.0, "valid_json": None}
    s = tc.score_example(WEATHER, [])
    assert (s["decision"], s["function"], s["call_exact"], s["none_right"]) == (0.0, 0.0, 0.0, 0.0)
    s = tc.score_example([], WEATHER)
    assert (s["decision"], s["call_exact"], s["needed_exact"], s["valid_json"]) == (0.0, 0.0, 0.0, None)


def test_text_read_with_the_hermes_syntax():
    hermes = SYNTAXES["hermes"]
    good = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    s, calls, content = tc.score_text(good, WEATHER, hermes)
    assert s["call_exact"] == 1.0 and s["valid_json"] == 1.0 and len(calls) == 1 and content == ""
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"\n</tool_call>'
    s, calls, content = tc.score_text(broken, WEATHER, hermes)
    assert calls == [] and content == broken
    assert (s["decision"], s["valid_json"], s["call_exact"]) == (1.0, 0.0, 0.0)  # an attempt, invalid JSON
    s, _, _ = tc.score_text(broken, [], hermes)
    assert (s["none_right"], s["decision"]) == (0.0, 0.0)  # a broken call where none was needed is still a call
    assert tc.score_text("It is sunny.", [], hermes)[0]["none_right"] == 1.0
    # the server's message: parsed calls, or the unparsed call left in content
    assert tc.score_message(None, WEATHER, WEATHER)["call_exact"] == 1.0
    assert tc.score_message(broken, [], WEATHER)["valid_json"] == 0.0


def test_summary_values_and_intervals():
    need = [tc.score_example(WEATHER, WEATHER)] * 8 + [tc.score_example([], WEATHER)] * 2
    none = [tc.score_example([], [])] * 3 + [tc.score_example(WEATHER, [])]
    out = tc.summarize(need + none)
    assert out["needed_exact"]["value"] == pytest.approx(0.8) and out["needed_exact"]["n"] == 10
    assert out["none_right"]["value"] == pytest.approx(0.75) and out["none_right"]["n"] == 4
    assert out["call_exact"]["value"] == pytest.approx(11 / 14) and out["call_exact"]["n"] == 14
    assert out["valid_json"]["value"] == 1.0 and out["valid_json"]["n"] == 9
    for m in ("needed_exact", "none_right", "call_exact", "decision", "function"):
        s = out[m]
        assert s["low"] <= s["value"] <= s["high"]
        assert s["low"] < s["high"]  # mixed outcomes: a real interval, not a point
    assert tc.summarize([tc.score_example([], [])])["needed_exact"] == {"value": None, "low": None, "high": None,
                                                                         "n": 0}


def test_tools_file_items(tmp_path):
    p = tmp_path / "t.jsonl"
    rows = [{"tools": [{"type": "function", "function": {"name": "get_weather"}}],
             "messages": [{"role": "user", "content": "weather Oslo"},
                          {"role": "assistant", "content": None, "tool_calls": WEATHER}]},
            {"tools": [{"type": "function", "function": {"name": "get_weather"}}],
             "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert tc.is_tools_file(p)
    items = tc.load_tool_items(p)
    assert [len(i.expected) for i in items] == [1, 0] and items[1].reference == "Hello!"
    assert items[0].messages == rows[0]["messages"][:1] and items[0].where.endswith(":1")
    # a reply from a tool result: the turns before it normalized as training reads them (no null content,
    # arguments as an object), the request as the file wrote it (what an OpenAI client sends)
    answer = {"tools": rows[0]["tools"], "messages": rows[0]["messages"] + [
        {"role": "tool", "tool_call_id": "call_x", "content": "{\"c\": 4}"}, {"role": "assistant", "content": "4 C."}]}
    p.write_text(p.read_text() + json.dumps(answer) + "\n")
    third = tc.load_tool_items(p)[2]
    assert third.expected == [] and third.reference == "4 C."
    assert third.messages[1]["content"] == "" and third.messages[1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Oslo"}
    assert third.request == answer["messages"][:-1] and third.request[1]["content"] is None
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"messages": rows[1]["messages"]}) + "\n")
    assert not tc.is_tools_file(plain)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tools": [], "messages": [{"role": "user", "content": "x"}]}) + "\n")
    from tunelab.errors import TunelabError

    with pytest.raises(TunelabError, match="ending with the assistant turn"):
        tc.load_tool_items(bad)
