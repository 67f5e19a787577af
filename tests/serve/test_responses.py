"""`POST /v1/responses` through the official `openai` client: text, function calls and their outputs,
reasoning items, the streamed events (reassembled, they equal the plain response), the 400s.
Scripted replies come from tests/serve/scripted.py; the tiny Llama answers the end-to-end ones."""

from __future__ import annotations

import json

import openai
import pytest

from tests.serve.test_tools import CALL, TWO_CALLS, scripted  # noqa: F401 - the scripted server fixture

TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _items(r) -> list[tuple]:
    out = []
    for item in r.output:
        if item.type == "message":
            out.append(("message", "".join(p.text for p in item.content)))
        elif item.type == "function_call":
            out.append(("function_call", item.name, item.arguments))
        else:
            out.append(("reasoning", "".join(p.text for p in item.content or [])))
    return out


def _streamed(client, **kw):
    events = list(client.responses.create(stream=True, **kw))
    return events, events[-1].response


def test_text_plain_and_streamed(scripted):  # noqa: F811
    client, pool, _ = scripted
    pool.script = "<think>They want a greeting.</think>Hello there!"
    r = client.responses.create(model="tuned", input="Say hello", instructions="Be brief.")
    assert r.object == "response" and r.status == "completed" and r.output_text == "Hello there!"
    assert _items(r) == [("reasoning", "They want a greeting."), ("message", "Hello there!")]
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens and r.usage.output_tokens > 3
    assert "Be brief." in pool.prompt_text() and r.instructions == "Be brief."
    events, final = _streamed(client, model="tuned", input="Say hello", instructions="Be brief.")
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello there!"
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == "They want a greeting."
    assert types.count("response.output_item.added") == types.count("response.output_item.done") == 2
    assert {"response.content_part.added", "response.output_text.done", "response.content_part.done"} <= set(types)
    assert _items(final) == _items(r) and final.output_text == r.output_text


def test_function_calls_and_their_outputs(scripted):  # noqa: F811
    client, pool, _ = scripted
    pool.script = TWO_CALLS
    r = client.responses.create(model="tuned", input="Weather in Paris and Oslo?", tools=[TOOL])
    calls = [i for i in r.output if i.type == "function_call"]
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Paris", "Oslo, a long city name to span fragments"]
    assert _items(r)[0] == ("message", "Let me check.") and all(c.call_id.startswith("call_") for c in calls)
    assert "get_weather" in pool.prompt_text()
    events, final = _streamed(client, model="tuned", input="Weather in Paris and Oslo?", tools=[TOOL])
    assert _items(final) == _items(r)
    for c in [i for i in final.output if i.type == "function_call"]:
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta" and e.item_id == c.id]
        done = [e for e in events if e.type == "response.function_call_arguments.done" and e.item_id == c.id]
        assert "".join(deltas) == c.arguments == done[0].arguments and len(deltas) >= 1
    # the calls and their outputs go back as input; the model answers
    pool.script = "Paris 21 C, Oslo 4 C."
    follow = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    follow += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
    follow += [{"type": "function_call_output", "call_id": c.call_id, "output": f"out-{i}"} for i, c in enumerate(calls)]
    r2 = client.responses.create(model="tuned", input=follow, tools=[TOOL])
    assert r2.output_text == "Paris 21 C, Oslo 4 C." and "out-1" in pool.prompt_text()
    pool.script = '{"city": "Rome"}}\n</tool_call>'
    forced = client.responses.create(model="tuned", input="Rome?", tools=[TOOL],
                                     tool_choice={"type": "function", "name": "get_weather"})
    assert _items(forced) == [("function_call", "get_weather", '{"city": "Rome"}')]


def test_max_output_tokens_is_incomplete(scripted):  # noqa: F811
    client, pool, _ = scripted
    pool.script = "one two three four five six seven eight nine ten"
    r = client.responses.create(model="tuned", input="Count", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    events, final = _streamed(client, model="tuned", input="Count", max_output_tokens=3)
    assert events[-1].type == "response.incomplete" and final.output_text == r.output_text


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, "input.0.call_id"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call", "call_id": "c", "name": "f",
                                                    "arguments": "[1]"}, {"type": "function_call_output",
                                                                          "call_id": "c", "output": "1"}]},
     "input.1.arguments"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_object"}}}, "text"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]}, "input"),
])
def test_unsupported_fields_are_400s_naming_them(scripted, extra, param):  # noqa: F811
    client, _, _ = scripted
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(**{"model": "tuned", "input": "hi", **extra})
    assert e.value.body["param"] == param or e.value.body["param"].startswith(param + ".")


def test_the_tiny_model_answers_a_response_end_to_end(server):
    alice = server.client(server.keys["alice"])
    r = alice.responses.create(model="tuned", input="What is LoRA?", max_output_tokens=10, temperature=0)
    assert r.status in ("completed", "incomplete") and r.usage.output_tokens >= 1
    chat = alice.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "What is LoRA?"}],
                                         max_tokens=10, temperature=0)
    assert r.output_text == chat.choices[0].message.content  # one template, one decoder, one parser
    events, final = _streamed(alice, model="tuned", input="What is LoRA?", max_output_tokens=10, temperature=0)
    assert final.output_text == r.output_text
    base = alice.responses.create(input="What is LoRA?", max_output_tokens=2)  # no model: the base (as vLLM)
    assert base.model == server.state.base and base.usage.output_tokens >= 1
