"""Tool calling and reasoning through `/v1/chat/completions`, with the official `openai` client.

Deterministic calls come from a scripted pool (tests/serve/scripted.py: the real pool, its tokens
emitted from a script through the server's own path); the tiny Llama itself answers the end-to-end
requests. The reply parser (serve/tool_calls.py) is checked piece by piece against data/tool_syntax's
whole-text parse."""

from __future__ import annotations

import json
import random

import openai
import pytest

from tests.serve.scripted import ScriptedPool
from tunelab.data.tool_syntax import SYNTAXES, split_reasoning
from tunelab.serve.tool_calls import ReplyParser, collect, parse_reply

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "%s"}}\n</tool_call>'
TWO_CALLS = "Let me check.\n" + CALL % "Paris" + "\n" + CALL % "Oslo, a long city name to span fragments"


# ---- the reply parser ---------------------------------------------------------------------------------------
REPLIES = ["plain text", "  <think>\nplan a\n</think>\n\nanswer  ", "<think>never closed  ", TWO_CALLS,
           '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>', "x <tool_ y", "a < b <thinking",
           '<think>p</think>\n<tool_call>{"name":"f","arguments":{}}</tool_call>\n', "<thi", "\n<tool_call>bad",
           '{"name": "f", "parameters": {"x": [1, 2]}}', "tail white space \n\n", "[TOOL_CALLS][{\"name\": \"g\"}]"]


def _key(d: dict):
    return d["reasoning"], d["content"], [c["function"] for c in d["calls"]]


@pytest.mark.parametrize("syntax", [*SYNTAXES, None])
def test_reply_parser_pieces_equal_the_whole_text_parse(syntax):
    """Any split into pieces gives the whole text's result, which is split_reasoning + syntax.parse."""
    syn = SYNTAXES[syntax] if syntax else None
    rng = random.Random(0)
    for text in REPLIES:
        reasoning, answer = split_reasoning(text)
        content, calls = syn.parse(answer) if syn else (answer, [])
        whole = parse_reply(text, syn)
        assert _key(whole) == (reasoning or None, content or None, [c["function"] for c in calls]), text
        for _ in range(15):
            parser, events, i = ReplyParser(syn), [], 0
            while i < len(text):
                j = i + rng.randint(1, 5)
                events += parser.push(text[i:j])
                i = j
            assert _key(collect(events + parser.finish())) == _key(whole), text


def test_reply_parser_holds_back_what_may_start_a_call_or_close_reasoning():
    p = ReplyParser(SYNTAXES["hermes"])
    assert p.push("Hi <tool") == [("content", "Hi")]  # " <tool" may still open a call
    assert p.push("box>") == [("content", " <toolbox>")]
    p = ReplyParser(None, thinking=True)  # the prompt opened <think>
    assert p.push("step one</thi") == [("reasoning", "step one")]
    assert p.push("nk>\n\nYes") == [("content", "Yes")]
    assert ReplyParser(SYNTAXES["hermes"], parallel=False).finish() == []
    one = parse_reply(TWO_CALLS, SYNTAXES["hermes"], parallel=False)
    assert [json.loads(c["function"]["arguments"])["city"] for c in one["calls"]] == ["Paris"]


# ---- through the server -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scripted(server, serve_env, server_factory, tmp_path_factory):
    """A server on the scripted pool whose run 'tuned' is the trained tiny run with the built-in chatml
    template (Hermes tool calls) in its template.json, as `data.template: chatml` writes it."""
    import shutil

    from tunelab.data.templates import Template, build_template
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("tools")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=serve_env["state"].base,
                       kb=tmp / "kb", rate_per_minute=0)
    run = state.tenant_runs("alice") / "tuned"
    shutil.copytree(serve_env["trained"], run)
    system = Template.load(run / "template.json").system
    build_template("chatml", server.pool.tokenizer, system=system).save(run / "template.json")
    key = create_key(state.db_path, "alice")[1]
    pool = ScriptedPool(server.pool, state)
    with server_factory(state, pool=pool) as srv:
        yield srv.client(key), pool, srv


def _stream(client, **kw) -> tuple[dict, list]:
    """A streamed reply reassembled as the openai docs do: content, reasoning, calls by index."""
    chunks = list(client.chat.completions.create(stream=True, **kw))
    out = {"content": "", "reasoning": "", "calls": {}, "finish": None}
    for c in chunks:
        if not c.choices:
            continue
        d = c.choices[0].delta
        out["content"] += d.content or ""
        out["reasoning"] += (d.model_extra or {}).get("reasoning_content") or ""
        for tc in d.tool_calls or []:
            slot = out["calls"].setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                assert slot["id"] is None and tc.function.name  # id, type and name come once, first
                slot.update(id=tc.id, name=tc.function.name, type=tc.type)
            else:
                assert slot["id"] is not None and not tc.function.name
            slot["arguments"] += tc.function.arguments or ""
        out["finish"] = c.choices[0].finish_reason or out["finish"]
    return out, chunks


def test_tool_calls_plain_and_streamed(scripted):
    client, pool, _ = scripted
    pool.script = TWO_CALLS
    r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER, TIME])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content == "Let me check."
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_weather", {"city": "Oslo, a long city name to span fragments"})]
    assert all(c.id.startswith("call_") for c in msg.tool_calls) and len({c.id for c in msg.tool_calls}) == 2
    # the tools were rendered into the prompt by the run's template
    assert "get_weather" in pool.prompt_text()
    got, chunks = _stream(client, model="tuned", messages=ASK, tools=[WEATHER, TIME])
    assert got["content"] == msg.content and got["finish"] == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in got["calls"].values()] == [
        (c.function.name, c.function.arguments) for c in msg.tool_calls]
    fragments = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(fragments) > 4  # name deltas, then the arguments in pieces


def test_reasoning_content_plain_and_streamed(scripted):
    client, pool, _ = scripted
    pool.script = "<think>\nThe user greets me.\n</think>\n\nHello!"
    r = client.chat.completions.create(model="tuned", messages=ASK)
    msg = r.choices[0].message
    assert msg.content == "Hello!" and msg.model_extra["reasoning_content"] == "The user greets me."
    got, _ = _stream(client, model="tuned", messages=ASK)
    assert (got["content"], got["reasoning"], got["finish"]) == ("Hello!", "The user greets me.", "stop")
    pool.script = "<think>plan</think>" + CALL % "Rome"
    r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER])
    assert r.choices[0].message.model_extra["reasoning_content"] == "plan"
    assert r.choices[0].message.content is None and r.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_malformed_call_is_text_and_tool_choice_none_parses_nothing(scripted):
    client, pool, _ = scripted
    pool.script = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'
    r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content == pool.script
    got, _ = _stream(client, model="tuned", messages=ASK, tools=[WEATHER])
    assert got["content"] == pool.script and not got["calls"]
    pool.script = CALL % "Paris"
    r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert r.choices[0].message.content == pool.script and r.choices[0].message.tool_calls is None
    assert "get_weather" not in pool.prompt_text()  # "none": no tools rendered


def test_forced_tool_choice_opens_the_call(scripted):
    client, pool, _ = scripted
    pool.script = '{"city": "Paris"}}\n</tool_call>'  # the model writes the arguments on
    r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert pool.prompt_text().endswith('<tool_call>\n{"name": "get_weather", "arguments": ')
    call = r.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    got, _ = _stream(client, model="tuned", messages=ASK, tools=[WEATHER, TIME],
                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert [(c["name"], c["arguments"]) for c in got["calls"].values()] == [("get_weather", call.function.arguments)]
    pool.script = 'get_time", "arguments": {}}\n</tool_call>'
    r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER, TIME], tool_choice="required")
    assert pool.prompt_text().endswith('<tool_call>\n{"name": "')  # "required": the call is open up to its name
    assert r.choices[0].message.tool_calls[0].function.name == "get_time"


def test_a_conversation_with_calls_and_results(scripted):
    client, pool, _ = scripted
    pool.script = "It is 21 C in Paris."
    messages = ASK + [{"role": "assistant", "content": None, "reasoning_content": "Paris needs a lookup.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"}]
    r = client.chat.completions.create(model="tuned", messages=messages, tools=[WEATHER])
    assert r.choices[0].message.content == "It is 21 C in Paris." and r.choices[0].finish_reason == "stop"
    assert "21 C, sunny" in pool.prompt_text() and '"city": "Paris"' in pool.prompt_text()
    assert "<think>\nParis needs a lookup.\n</think>" in pool.prompt_text()  # chatml writes reasoning inline


@pytest.mark.parametrize("change, param", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
    ({"messages": ASK + [{"role": "tool", "tool_call_id": "call_x", "content": "?"}]}, "messages.1.tool_call_id"),
    ({"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}, ASK[0]]},
     "messages.1.tool_calls"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
])
def test_invalid_tool_requests_are_400s_naming_the_field(scripted, change, param):
    client, _, _ = scripted
    kw = {"model": "tuned", "messages": ASK, "tools": [WEATHER], **change}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**{k: v for k, v in kw.items() if v is not None})
    assert e.value.status_code == 400 and e.value.body["param"] == param


def test_the_tiny_model_answers_with_tools_end_to_end(scripted, server):
    """The real decoder on the chatml run: tools accepted and rendered, a forced call's opening in the prompt;
    whatever the random model writes after it comes back as a call or as text, never an error; plain = streamed.
    A run whose template has no tool format (the tiny model's own Jinja) is a 400 naming `tools`."""
    client, pool, _ = scripted
    pool.script = None
    try:
        r = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER], max_tokens=12, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length", "tool_calls") and r.usage.completion_tokens >= 1
        assert "get_weather" in pool.prompt_text()
        named = {"type": "function", "function": {"name": "get_weather"}}
        forced = client.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER], max_tokens=12,
                                                temperature=0, tool_choice=named)
        msg = forced.choices[0].message
        assert msg.tool_calls or msg.content.startswith('<tool_call>\n{"name": "get_weather", "arguments": ')
        got, _ = _stream(client, model="tuned", messages=ASK, tools=[WEATHER], max_tokens=12, temperature=0,
                         tool_choice=named)
        assert got["content"] == (msg.content or "") and len(got["calls"]) == len(msg.tool_calls or [])
    finally:
        pool.script = ""
    alice = server.client(server.keys["alice"])
    with pytest.raises(openai.BadRequestError) as e:
        alice.chat.completions.create(model="tuned", messages=ASK, tools=[WEATHER], max_tokens=4)
    assert e.value.body["param"] == "tools" and e.value.body["code"] == "tools_unsupported"


def test_required_on_the_model_itself_calls_one_of_the_tools(scripted):
    """The tiny random model decodes (no script): "required" opens the call up to its name, and the
    name constraint makes it spell one of the request's tools, plain and streamed."""
    client, pool, _ = scripted
    pool.script = None
    try:
        for tools in ([WEATHER, TIME], [TIME]):
            names = [t["function"]["name"] for t in tools]
            r = client.chat.completions.create(model="tuned", messages=ASK, tools=tools, tool_choice="required",
                                               max_tokens=12, temperature=0)
            msg = r.choices[0].message
            text = msg.content or ""  # random arguments do not parse: the call comes back as text
            written = msg.tool_calls[0].function.name if msg.tool_calls else text
            assert any(written.startswith(f'<tool_call>\n{{"name": "{n}"') or written == n for n in names), written
            got, _ = _stream(client, model="tuned", messages=ASK, tools=tools, tool_choice="required",
                             max_tokens=12, temperature=0)
            assert got["content"] == (msg.content or "")
    finally:
        pool.script = ""
