"""Tool-call conventions: format -> parse round trips, malformed calls, several calls, argument forms."""

import json

import pytest

from tunelab.data.templates import BUILTIN, Template
from tunelab.data.tool_syntax import SYNTAXES, split_reasoning, syntax_for

WEATHER = {"id": "call_1", "type": "function",
           "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}
TIME = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}}


def _plain(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("name", sorted(SYNTAXES))
def test_round_trip_one_and_several_calls(name):
    s = SYNTAXES[name]
    for calls in ([WEATHER], [WEATHER, TIME]):
        text = s.format_calls(calls)
        assert text.startswith(s.start)
        content, parsed = s.parse(text)
        assert content == ""
        assert _plain(parsed) == [("get_weather", {"city": "Paris", "unit": "celsius"}),
                                  ("get_time", {"tz": "Europe/Paris"})][:len(calls)]
        for c in parsed:
            assert c["type"] == "function" and c["id"].startswith("call_") and len(c["id"]) == 29
            assert isinstance(c["function"]["arguments"], str)
        assert len({c["id"] for c in parsed}) == len(parsed)


@pytest.mark.parametrize("name", sorted(SYNTAXES))
def test_arguments_as_string_or_object_give_the_same_text(name):
    s = SYNTAXES[name]
    as_obj = {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
    assert s.format_calls([WEATHER]) == s.format_calls([as_obj])


def test_exact_texts_of_each_convention():
    assert SYNTAXES["hermes"].format_calls([TIME]) == (
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>')
    assert SYNTAXES["llama3_json"].format_calls([TIME]) == '{"name": "get_time", "parameters": {"tz": "Europe/Paris"}}'
    assert SYNTAXES["mistral"].format_calls([TIME]) == (
        '[TOOL_CALLS][{"name": "get_time", "arguments": {"tz": "Europe/Paris"}, "id": "call_2"}]')


def test_content_before_the_call_is_kept():
    s = SYNTAXES["hermes"]
    content, calls = s.parse("Let me check.\n" + s.format_calls([WEATHER]))
    assert content == "Let me check." and _plain(calls) == [("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert s.parse("no call here") == ("no call here", [])


@pytest.mark.parametrize("name, text", [
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'),  # unbalanced JSON
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}}'),  # never closed (cut by max_tokens)
    ("hermes", '<tool_call>\n{"arguments": {"a": 1}}\n</tool_call>'),  # no name
    ("hermes", '<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call>'),  # arguments not an object
    ("llama3_json", '{"name": "f", "parameters": {"a": }'),
    ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}'),
    ("mistral", '[TOOL_CALLS][]'),
])
def test_malformed_call_leaves_the_text_unchanged(name, text):
    assert SYNTAXES[name].parse(text) == (text, [])


def test_string_arguments_inside_the_call_are_accepted():
    _, calls = SYNTAXES["hermes"].parse('<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>')
    assert _plain(calls) == [("f", {"a": 1})]


def test_split_reasoning():
    assert split_reasoning("<think>\nplan\n</think>\n\nanswer") == ("plan", "answer")
    assert split_reasoning("<think>\nstill thinking") == ("still thinking", "")
    assert split_reasoning("plan</think>answer") == ("plan", "answer")
    assert split_reasoning("<think>\n\n</think>\n\nanswer") == ("", "answer")
    assert split_reasoning("just an answer") == (None, "just an answer")
    assert split_reasoning("[R]x[/R]y", "[R]", "[/R]") == ("x", "y")


def test_syntax_for_templates():
    assert syntax_for(Template("chatml", fmt=BUILTIN["chatml"])).name == "hermes"
    assert syntax_for(Template("mistral", fmt=BUILTIN["mistral"])).name == "mistral"
    assert syntax_for(Template("auto", jinja="{{ '[TOOL_CALLS] [' }}")).name == "mistral"
    assert syntax_for(Template("auto", jinja="{{ '<tool_call>' }}")).name == "hermes"
    assert syntax_for(Template("auto", jinja='{{ "<|python_tag|>" }}')).name == "llama3_json"
    assert syntax_for(Template("auto", jinja="{{ messages }}")).name == "hermes"
