"""The Ollama export with tools: a chatml run's TEMPLATE renders .Tools, .ToolCalls and tool messages as the run's
template does (checked on our Go-template interpreter with Ollama's values: Go's JSON of its structs), Ollama finds
its call tag and calls the model writes read back; formats without a tool convention get no tools."""

from __future__ import annotations

import json

import pytest

from tunelab.data.templates import BUILTIN, Template, build_template
from tunelab.data.tool_syntax import SYNTAXES
from tunelab.errors import TunelabError
from tunelab.export.gotemplate import GoTemplate
from tunelab.export.ollama import check_modelfile, modelfile_text, ollama_template, parse_modelfile, render_chat
from tunelab.export.ollama_families import reasoning_probes
from tunelab.export.ollama_tools import call_tag, go_json, json_tokens, same_but_json, tool_probes


class _Tok:
    eos_token, bos_token, chat_template = "<|im_end|>", None, None


SYSTEMS = [None, "You are TuneBot.", 'Line one.\nLine two with "quotes" and {{ braces }}.']


def _run_text(template: Template, conv: list[dict], tools: list[dict]) -> str:
    gen = conv[-1]["role"] != "assistant"
    return "".join(t for t, _ in template.segments(conv, add_generation_prompt=gen, tools=tools or None))


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_chatml_run_exports_a_tool_template_that_renders_as_the_run(system):
    template = build_template("chatml", _Tok(), system=system)
    ot = ollama_template(template)
    assert ot.tools and ot.format == "chatml"
    text = modelfile_text("run-q4_0.gguf", ot, 2048)
    cmds = dict(parse_modelfile(text))  # as Ollama's parser reads the Modelfile
    assert "with tools (Hermes <tool_call> calls)" in text
    idents = GoTemplate(cmds["template"]).identifiers()
    assert {"tools", "toolcalls", "messages"} <= idents  # Ollama: "supports tools" (server/images.go)
    for tools, conv in tool_probes():
        got, want = render_chat(cmds["template"], conv, cmds.get("system"), tools), _run_text(template, conv, tools)
        assert same_but_json(got, want), (got, want)
        # only the JSON's spacing and key order may differ: the text around it is the same, token for token
        assert [t for t in json_tokens(got) if isinstance(t, str)] == [t for t in json_tokens(want) if isinstance(t, str)]
    assert check_modelfile(text, template) == 8 + len(tool_probes()) + len(reasoning_probes())


def test_the_json_is_what_ollama_writes():
    """Go's encoding/json of Ollama's templateTool and templateArgs: struct fields in their order, map keys
    sorted, no spaces, <, > and & escaped, schema keys Ollama has no field for dropped."""
    tool = {"type": "function", "function": {"name": "f", "description": "a < b & c", "strict": True,
                                             "parameters": {"type": "object", "additionalProperties": False,
                                                            "properties": {"z": {"type": "integer", "minimum": 0},
                                                                           "a": {"type": ["string", "null"]}},
                                                            "required": ["z"]}}}
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"z": 3, "a": "x>y"}'}}]}
    ot = ollama_template(build_template("chatml", _Tok()))
    out = render_chat(ot.text, [{"role": "user", "content": "u"}, call], tools=[tool])
    assert ('{"type":"function","function":{"name":"f","description":"a \\u003c b \\u0026 c","parameters":'
            '{"type":"object","required":["z"],"properties":{"a":{"type":["string","null"]},'
            '"z":{"type":"integer"}}}}}') in out
    assert '<tool_call>\n{"name": "f", "arguments": {"a":"x\\u003ey","z":3}}\n</tool_call><|im_end|>\n' in out
    assert go_json({"k": "é\u2028"}) == '{"k":"é\\u2028"}'


def test_ollama_finds_the_call_tag_and_the_calls_read_back():
    ot = ollama_template(build_template("chatml", _Tok(), system="S"))
    assert call_tag(ot.text) == SYNTAXES["hermes"].start == "<tool_call>"  # tools/template.go parseTag
    calls = [{"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
             {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
    conv = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "Both.", "tool_calls": calls}]
    rendered = render_chat(ot.text, conv)
    reply = rendered.split("<|im_start|>assistant\n")[-1].removesuffix("<|im_end|>\n")
    content, parsed = SYNTAXES["hermes"].parse(reply)  # what the server (and Ollama) read from such a reply
    assert content == "Both." and [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] \
        == [("get_weather", {"city": "Oslo"}), ("get_time", {})]
    assert same_but_json(reply, "Both.\n" + SYNTAXES["hermes"].format_calls(calls))


@pytest.mark.parametrize("name", ["llama2", "gemma", "alpaca", "qa"])
def test_formats_without_a_tool_convention_export_no_tools(name):
    template = Template(name, system="S", fmt=BUILTIN[name], eos="</s>")
    ot = ollama_template(template)
    assert not ot.tools and "tools" not in GoTemplate(ot.text).identifiers()
    assert check_modelfile(modelfile_text("r.gguf", ot, 2048), template) == 8


def test_a_tool_template_unlike_the_run_is_refused():
    template = build_template("chatml", _Tok(), system="S")
    ot = ollama_template(template)
    bad = modelfile_text("r.gguf", ot, 2048).replace("<tool_response>", "<tool_result>")
    with pytest.raises(TunelabError, match="tools"):
        check_modelfile(bad, template)
    auto = Template("auto", jinja=build_template("chatml", _Tok()).jinja.replace("tool_calls", "calls"),
                    eos="<|im_end|>")  # a Jinja that does not render calls: no tools in the export
    assert not ollama_template(auto).tools
