"""The Ollama export per template family: chatml, qwen3, llama3 and mistral runs get a TEMPLATE with tools (qwen3 also
with thinking) that renders every plain, tool and reasoning probe as the run's template does (read back from the
Modelfile as Ollama's parser reads it, executed on our Go-template interpreter with Ollama's values); phi3 and gemma
runs get one without tools (and their runs refuse tool conversations); an `auto` Jinja is matched by rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.data.templates import Template, build_template, render_jinja
from tunelab.errors import TunelabError
from tunelab.export.gotemplate import GoTemplate
from tunelab.export.ollama import (check_modelfile, modelfile_text, ollama_template, parse_modelfile,
                                   probe_conversations, render_chat)
from tunelab.export.ollama_families import FAMILIES, reasoning_probes
from tunelab.export.ollama_tools import call_tag, json_tokens, same_but_json, tool_probes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
EOS = {"chatml": "<|im_end|>", "qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>",
       "phi3": "<|endoftext|>", "gemma": "<eos>"}
# none; plain; a SYSTEM line with quotes and Go actions; one no SYSTEM line can quote (the TEMPLATE holds it)
SYSTEMS = [None, "You are TuneBot.", 'Line one.\nLine two with "quotes" and {{ braces }}.', 'Say """x""" \\ {{ .Prompt }}']
CALLS = {"chatml": "Hermes <tool_call> calls", "qwen3": "Hermes <tool_call> calls", "llama3": "Llama 3.1 JSON calls",
         "mistral": "Mistral [TOOL_CALLS] calls"}


class _Tok:
    bos_token, chat_template = None, None

    def __init__(self, eos: str):
        self.eos_token = eos


def _template(name: str, system: str | None = None) -> Template:
    return build_template(name, _Tok(EOS[name]), system=system)


def _run_text(template: Template, conv: list[dict], tools: list[dict] | None = None) -> str:
    gen = conv[-1]["role"] != "assistant"
    return "".join(t for t, _ in template.segments(conv, add_generation_prompt=gen, tools=tools or None))


def _read_back(template: Template) -> tuple[str, dict]:
    ot = ollama_template(template)
    text = modelfile_text("run-q4_0.gguf", ot, 2048)
    return text, dict(parse_modelfile(text))


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("name", ["chatml", "qwen3", "llama3", "mistral"])
def test_a_family_with_tools_exports_a_template_that_renders_as_the_run(name, system):
    template = _template(name, system)
    ot = ollama_template(template)
    assert ot.tools and ot.format == name and ot.thinking == (name == "qwen3")
    assert ot.stops[-1] == {"llama3": "<|eot_id|>", "mistral": "</s>"}.get(name, "<|im_end|>")
    text, cmds = _read_back(template)
    assert f"with tools ({CALLS[name]})" in text and ("system" in cmds) == (ot.system is not None)
    assert {"tools", "toolcalls", "messages", "thinking"} <= GoTemplate(cmds["template"]).identifiers()
    for conv in probe_conversations():  # plain chats: the same text, character for character
        assert render_chat(cmds["template"], conv, cmds.get("system")) == _run_text(template, conv)
    for tools, conv in tool_probes() + reasoning_probes():
        got, want = render_chat(cmds["template"], conv, cmds.get("system"), tools), _run_text(template, conv, tools)
        assert same_but_json(got, want), (got, want)
        # only the JSON's spacing and key order may differ: the text around it is the same
        assert [t for t in json_tokens(got) if isinstance(t, str)] == [t for t in json_tokens(want) if isinstance(t, str)]
    n = len(probe_conversations()) + len(tool_probes()) + len(reasoning_probes()) + (name == "qwen3")
    assert check_modelfile(text, template) == n


@pytest.mark.parametrize("name, needle", [
    ("qwen3", "<think>\n{{ .Thinking }}\n</think>\n\n"), ("llama3", "<|start_header_id|>ipython<|end_header_id|>"),
    ("mistral", "[TOOL_RESULTS]"), ("chatml", "<tool_response>")])
def test_a_changed_family_template_is_refused_by_the_check(name, needle):
    template = _template(name, "S")
    text, _ = _read_back(template)
    assert needle in text
    with pytest.raises(TunelabError, match="renders"):
        check_modelfile(text.replace(needle, needle.replace("\n", " ", 1) if "\n" in needle else needle + " "),
                        template)


@pytest.mark.parametrize("name, tag", [("chatml", "<tool_call>"), ("qwen3", "<tool_call>"), ("llama3", "{"),
                                       ("mistral", "[TOOL_CALLS][")])
def test_ollama_finds_each_familys_call_tag(name, tag):
    assert call_tag(ollama_template(_template(name)).text) == tag  # tools/template.go parseTag


def test_qwen3_thinking_follows_the_run_and_ollamas_think_flag():
    template = _template("qwen3", "S")
    ot = ollama_template(template)
    u1, a1 = {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "reasoning_content": "r1"}
    u2, a2 = {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}
    out = render_chat(ot.text, [u1, a1, u2, a2], ot.system)
    assert "r1" not in out and out.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n")
    assert render_chat(ot.text, [u1, a1], ot.system).endswith("<think>\nr1\n</think>\n\nA1<|im_end|>\n")
    prompt = [{"role": "system", "content": "S"}, u1]
    off = render_chat(ot.text, [u1], ot.system, think=False)
    assert off == render_jinja(template.jinja, prompt, True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    for think in (None, True):
        assert render_chat(ot.text, [u1], ot.system, think=think).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("name", ["phi3", "gemma"])
def test_formats_without_tools_export_plain_templates_and_refuse_tool_chats(name):
    template = _template(name, "You are TuneBot.")
    ot = ollama_template(template)
    text, cmds = _read_back(template)
    assert not ot.tools and "with tools" not in text and "tools" not in GoTemplate(cmds["template"]).identifiers()
    assert check_modelfile(text, template) == len(probe_conversations())
    tools, conv = tool_probes()[2]
    with pytest.raises(TunelabError, match="has no tool-call format"):
        template.segments(conv, add_generation_prompt=True, tools=tools)


def test_an_auto_qwen3_template_is_matched_by_rendering():
    jinja = (FIXTURES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    template = Template("auto", system="You are TuneBot.", jinja=jinja, eos="<|im_end|>")
    ot = ollama_template(template)
    assert ot.format == "qwen3 (matched from auto)" and ot.tools and ot.thinking
    assert check_modelfile(modelfile_text("r.gguf", ot, 2048), template) > len(probe_conversations())


def test_an_auto_template_go_cannot_write_is_refused_in_one_line():
    """Meta's Llama 3.3 template trims every message; a Go template has no trim, so no family matches."""
    jinja = (FIXTURES / "meta-llama-Llama-3.3-70B-Instruct.jinja").read_text(encoding="utf-8")
    with pytest.raises(TunelabError) as e:
        ollama_template(Template("auto", jinja=jinja, eos="<|eot_id|>", bos="<|begin_of_text|>"))
    msg = e.value.one_line()
    assert "matches no built-in format" in msg and "qwen3, llama3 or mistral" in msg and "\n" not in msg


def test_every_family_is_a_builtin_with_a_stop():
    from tunelab.data.chat_jinja import BUILTIN_JINJA

    assert set(FAMILIES) == set(BUILTIN_JINJA)
