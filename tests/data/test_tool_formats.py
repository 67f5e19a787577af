"""Chat records with tools and reasoning: OpenAI's and ShareGPT's shapes normalize to one form; bad ones fail."""

import json

import pytest

from tunelab.data.formats import to_chat
from tunelab.data.sources import Record
from tunelab.errors import TunelabError

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def openai_record(arguments, tools=TOOLS, **extra):
    return Record({"tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "21 C"},
        {"role": "assistant", "content": "It is 21 C.", **extra}]}, "d.jsonl:1")


def test_openai_shape_string_and_object_arguments_normalize_alike():
    a = to_chat(openai_record('{"city": "Paris"}'))
    b = to_chat(openai_record({"city": "Paris"}))
    assert a.messages == b.messages and a.tools == b.tools == TOOLS
    call = a.messages[1]
    assert call == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert a.messages[2] == {"role": "tool", "content": "21 C", "tool_call_id": "call_abc"}


def test_bare_tools_are_wrapped_and_a_json_string_of_tools_is_read():
    bare = [{"name": "get_weather", "parameters": {"type": "object"}}]
    assert to_chat(openai_record({}, tools=bare)).tools == TOOLS
    assert to_chat(openai_record({}, tools=json.dumps(bare))).tools == TOOLS


def test_sharegpt_function_call_and_observation():
    rec = Record({"tools": json.dumps(TOOLS), "conversations": [
        {"from": "human", "value": "Weather in Paris and Rome?"},
        {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                      {"name": "get_weather", "arguments": {"city": "Rome"}}])},
        {"from": "observation", "value": "21 C"}, {"from": "observation", "value": "25 C"},
        {"from": "gpt", "value": "Paris 21 C, Rome 25 C."}]}, "d.jsonl:4")
    ex = to_chat(rec)
    calls = ex.messages[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call00001", "call00002"]  # 9 alphanumerics: Mistral's template needs them
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    # results without ids answer the open calls in order
    assert [(m["role"], m["tool_call_id"]) for m in ex.messages[2:4]] == [("tool", "call00001"), ("tool", "call00002")]


def test_reasoning_from_the_field_or_an_inline_think_block():
    field = to_chat(openai_record({}, reasoning_content="\nIt says 21.\n"))
    inline = Record({"messages": [{"role": "user", "content": "2+2?"},
                                  {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}]}, "d:1")
    empty = Record({"messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "<think>\n\n</think>\n\nhello"}]}, "d:2")
    assert field.messages[-1] == {"role": "assistant", "content": "It is 21 C.", "reasoning_content": "It says 21."}
    assert to_chat(inline).messages[-1] == {"role": "assistant", "content": "4", "reasoning_content": "add them"}
    assert to_chat(empty).messages[-1] == {"role": "assistant", "content": "hello", "reasoning_content": ""}


@pytest.mark.parametrize("record, phrase", [
    (openai_record('{"city": Paris}'), "messages[1].tool_calls[0].function.arguments is not valid JSON"),
    (openai_record('[1, 2]'), "arguments must be a JSON object, got list"),
    (Record({"tools": TOOLS, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "nope", "arguments": {}}}]},
        {"role": "tool", "content": "y"}, {"role": "assistant", "content": "z"}]}, "d.jsonl:1"),
     "messages[1].tool_calls[0]: function 'nope' is not in the record's tools"),
    (Record({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"},
                          {"role": "assistant", "content": "z"}]}, "d.jsonl:1"),
     "roles out of order: turn 2 is 'tool', expected 'assistant'"),
    (Record({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {}}}]}, {"role": "user", "content": "y"},
        {"role": "assistant", "content": "z"}]}, "d.jsonl:1"), "turn 3 is 'user', expected 'tool'"),
])
def test_bad_tool_records_name_the_field(record, phrase):
    with pytest.raises(TunelabError) as e:
        to_chat(record)
    assert phrase in str(e.value) and "d.jsonl:1" in str(e.value)


def test_a_structured_tool_result_becomes_its_json_text():
    rec = openai_record({})
    rec.data["messages"][2]["content"] = {"temp": 21, "sky": "clear"}
    assert to_chat(rec).messages[2]["content"] == '{"temp": 21, "sky": "clear"}'
