"""The Ollama Modelfile: its TEMPLATE, read back as Ollama reads a Modelfile and filled as Ollama fills
it (.System, .Messages, the Modelfile SYSTEM), renders every conversation as the run's template does."""

from __future__ import annotations

import pytest

from tunelab.data.templates import BUILTIN, Template, TurnFormat
from tunelab.errors import TunelabError
from tunelab.export.ollama import (
    check_modelfile, choose_num_ctx, match_builtin, modelfile_text, ollama_name, ollama_template, parse_modelfile,
    probe_conversations, render_chat,
)
from tunelab.models.tiny import CHATML_TEMPLATE

# SmolLM2-135M-Instruct's own chat template (the quickstart model): ChatML with a default system prompt
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
           "system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# Llama 3's: no built-in format renders it
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
          "+ m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

SYSTEMS = [None, "You are TuneBot.", "Line one.\nLine two with \"quotes\" and {{ braces }}.", ""]
TEMPLATES = ([Template(n, system=s, fmt=BUILTIN[n], eos="</s>") for n in BUILTIN for s in SYSTEMS]
             # (not system "": the Jinja would write an empty system turn, which no built-in format does)
             + [Template("auto", system=s, jinja=j, eos="<|im_end|>") for j in (CHATML_TEMPLATE, SMOLLM2)
                for s in SYSTEMS[:3]]
             + [Template("custom", system=s, fmt=TurnFormat(system="{{SYS}} {content}\n", user="U: {content}\n",
                                                           assistant_prefix="A: ", stop="<eos>\n", bos="\t"),
                         eos="<|end|>") for s in SYSTEMS])


def _ids(t: Template) -> str:
    return f"{t.name}-{'jinja' + str(len(t.jinja)) if t.jinja else ''}-{t.system!r:.12}"


def _expected(template: Template, conv: list[dict]) -> str:
    if conv[-1]["role"] == "user":
        return template.prompt_text(conv)  # the generation prompt
    return "".join(text for text, _ in template.segments(conv))  # the training text


@pytest.mark.parametrize("template", TEMPLATES, ids=_ids)
def test_modelfile_renders_every_conversation_as_the_run_template(template):
    ot = ollama_template(template)
    text = modelfile_text("run-f16.gguf", ot, 2048)
    cmds = dict(parse_modelfile(text))  # as Ollama's parser reads it
    assert cmds["model"] == "./run-f16.gguf"
    assert cmds.get("system") == (template.system or None)
    convs = probe_conversations()
    assert {c[-1]["role"] for c in convs} == {"user", "assistant"} and any(c[0]["role"] == "system" for c in convs)
    assert any(sum(m["role"] == "user" for m in c) == 2 and c[-1]["role"] == "user" for c in convs)  # multi-turn
    for conv in convs:
        assert render_chat(cmds["template"], conv, cmds.get("system")) == _expected(template, conv), conv
    assert check_modelfile(text, template) == len(convs)


def test_chatml_auto_template_is_exported_as_chatml_with_its_default_system():
    t = Template("auto", system=None, jinja=SMOLLM2, eos="<|im_end|>")
    m = match_builtin(t)
    assert m is not None and m.name == "chatml"
    assert m.fmt.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    ot = ollama_template(t)
    assert ot.format == "chatml (matched from auto)" and ot.system is None and ot.stops == ["<|im_end|>"]
    prompt = render_chat(ot.text, [{"role": "user", "content": "hi"}])
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                      "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_modelfile_lines():
    t = Template("chatml", system="You are TuneBot.", fmt=BUILTIN["chatml"], eos="<|endoftext|>")
    text = modelfile_text("r-q4_0.gguf", ollama_template(t), 2048, temperature=0.0, run_name="r")
    cmds = parse_modelfile(text)
    assert ("model", "./r-q4_0.gguf") in cmds and ("system", "You are TuneBot.") in cmds
    assert [v for k, v in cmds if k == "stop"] == ["<|endoftext|>", "<|im_end|>"]
    assert ("temperature", "0") in cmds and ("num_ctx", "2048") in cmds
    assert text.splitlines()[0].startswith("#")  # comments are ignored by the parser
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_generated_template_reads_like_ollamas_own():
    ot = ollama_template(Template("chatml", fmt=BUILTIN["chatml"], eos="<|im_end|>"))
    assert ot.text == ('{{- $system := .System }}\n'
                       '{{- if $system }}<|im_start|>system\n{{ $system }}<|im_end|>\n{{ end }}\n'
                       '{{- range .Messages }}\n'
                       '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n'
                       '{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n{{ end }}\n'
                       '{{- end }}')


def test_system_prompt_that_cannot_be_quoted_lives_in_the_template():
    t = Template("chatml", system='ends with """ triple quotes', fmt=BUILTIN["chatml"], eos="<|im_end|>")
    text = modelfile_text("x.gguf", ollama_template(t), 2048)
    assert "system" not in dict(parse_modelfile(text))
    assert check_modelfile(text, t) == len(probe_conversations())


def test_ollama_semantics_modelfile_system_only_leads_a_chat_without_one():
    tmpl = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}|{{ .System }}"
    assert render_chat(tmpl, [{"role": "user", "content": "u"}], system="S") == "[system:S][user:u]|S"
    assert render_chat(tmpl, [{"role": "system", "content": "mine"}, {"role": "user", "content": "u"}],
                       system="S") == "[system:mine][user:u]|mine"
    # consecutive messages of one role are merged, as Ollama's collate does
    assert render_chat(tmpl, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "[user:a\n\nb]|"
    with pytest.raises(ValueError, match="legacy"):
        render_chat("{{ .Prompt }}", [{"role": "user", "content": "u"}])


def test_check_catches_a_template_that_differs():
    t = Template("chatml", fmt=BUILTIN["chatml"], eos="<|im_end|>")
    text = modelfile_text("x.gguf", ollama_template(t), 2048).replace("<|im_start|>assistant\n{{ else", "{{ else")
    with pytest.raises(TunelabError, match="renders"):
        check_modelfile(text, t)


def test_unmatched_auto_template_is_refused_in_one_line():
    with pytest.raises(TunelabError) as e:
        ollama_template(Template("auto", jinja=LLAMA3, eos="<|eot_id|>", bos="<|begin_of_text|>"))
    msg = e.value.one_line()
    assert "matches no built-in format" in msg and "data.template: chatml" in msg and "\n" not in msg


@pytest.mark.parametrize("text, expected", [
    ('FROM ./a.gguf\nTEMPLATE """x\ny"""\n', [("model", "./a.gguf"), ("template", "x\ny")]),
    ('# c\nFROM a\nPARAMETER stop "<|im_end|>"\nPARAMETER num_ctx 4096', [("model", "a"), ("stop", "<|im_end|>"),
                                                                           ("num_ctx", "4096")]),
    ('FROM a\nSYSTEM """ spaced  """\n', [("model", "a"), ("system", " spaced  ")]),
])
def test_parse_modelfile_reads_as_ollama(text, expected):
    assert parse_modelfile(text) == expected


@pytest.mark.parametrize("text", ["TEMPLATE x\n", "FRM a\n", 'FROM a\nSYSTEM """open\n'])
def test_parse_modelfile_rejects_what_ollama_rejects(text):
    with pytest.raises(ValueError):
        parse_modelfile(text)


def test_num_ctx_and_name():
    assert choose_num_ctx(512, 8192) == 2048  # min(8192, max(512, 2048))
    assert choose_num_ctx(4096, 8192) == 4096
    assert choose_num_ctx(512, 1024) == 1024  # never beyond the model's positions
    assert choose_num_ctx(None, None) == 2048
    assert ollama_name("My Run_2 (copy)") == "my-run_2-copy"


@pytest.mark.parametrize("name", ["gemma", "mistral"])
def test_a_gguf_that_adds_bos_gets_a_template_without_the_formats_bos(name):
    from tunelab.export.ollama import leave_bos_to_runtime

    template = Template(name, system="You are TuneBot.", fmt=BUILTIN[name], eos="</s>", bos=BUILTIN[name].bos)
    ot = ollama_template(template)
    bos = BUILTIN[name].bos
    assert bos in ot.text and check_modelfile(modelfile_text("r.gguf", ot, 2048), template) == len(probe_conversations())
    assert leave_bos_to_runtime(ot, "") is None  # the GGUF adds none
    lean = leave_bos_to_runtime(ot, bos)
    assert lean.runtime_bos == bos and bos not in lean.text
    text = modelfile_text("r.gguf", lean, 2048)
    assert f"{bos} is the BOS Ollama adds" in text.splitlines()[1]
    # Ollama's prompt is BOS + the TEMPLATE's text: every probe as the run, with one BOS
    assert check_modelfile(text, template, prefix=bos) == len(probe_conversations())
    for conv in probe_conversations():
        assert (bos + render_chat(dict(parse_modelfile(text))["template"], conv, template.system)).count(bos) == 1
    with pytest.raises(TunelabError, match="renders"):  # read without the runtime's BOS, it is not the run's text
        check_modelfile(text, template)
    chatml = ollama_template(Template("chatml", fmt=BUILTIN["chatml"], eos="<|im_end|>"))
    assert leave_bos_to_runtime(chatml, "<s>") is None  # a format that writes no BOS: nothing to leave out


def test_the_ollama_target_leaves_bos_to_a_gguf_that_adds_it_and_keeps_a_template_it_cannot_lean():
    from dataclasses import replace
    from pathlib import Path
    from types import SimpleNamespace

    from tunelab.export.targets.ollama import OllamaResult, OllamaTarget

    job = SimpleNamespace(run=SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(max_length=512)),
                                              path=Path("runs/g")), temperature=0.0)
    gemma = Template("gemma", system="You are TuneBot.", fmt=BUILTIN["gemma"], eos="<eos>")  # bos "": as saved

    def filled(template_or_ot, bos):
        ot = template_or_ot if not isinstance(template_or_ot, Template) else ollama_template(template_or_ot)
        res = OllamaResult(to="ollama", quant="f16", out=Path("o"), template=ot)
        OllamaTarget().modelfile(job, res, "g.gguf", None, bos=bos)
        return res

    lean = filled(gemma, "<bos>")
    assert lean.template.runtime_bos == "<bos>" and "<bos>" not in dict(parse_modelfile(lean.modelfile))["template"]
    assert lean.checked == len(probe_conversations())
    whole = filled(gemma, "")  # the GGUF adds none: the TEMPLATE writes it, as before
    assert whole.template.runtime_bos == "" and "<bos>" in dict(parse_modelfile(whole.modelfile))["template"]
    # a TEMPLATE whose BOS text is not only its first turn's: BOS + the lean TEMPLATE would differ; kept whole
    ot = ollama_template(gemma)
    odd = replace(ot, text=ot.text.replace("<start_of_turn>model", "<bos><start_of_turn>model"),
                  source=replace(gemma, fmt=replace(BUILTIN["gemma"], assistant_prefix="<bos>" + BUILTIN["gemma"].assistant_prefix)))
    kept = filled(odd, "<bos>")
    assert kept.template.runtime_bos == "" and kept.template.text == odd.text
