"""Built-in formats against the families' real chat templates (tests/fixtures/chat_templates, rendered by
transformers' own Jinja environment), with tools, calls, tool results and reasoning; the learned spans of
`template: auto` on each real template; reasoning options; the exported Jinja."""

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from tunelab.data.chat_jinja import PLAIN_AS_TURNFORMAT
from tunelab.data.formats import ChatExample
from tunelab.data.inspect import learned_parts
from tunelab.data.templates import BUILTIN, Template, build_template, chat_template_jinja
from tunelab.data.tokenize import example_segments
from tunelab.errors import TunelabError

FX = Path(__file__).parent.parent / "fixtures" / "chat_templates"
REAL = {"qwen3": "Qwen-Qwen3-0.6B.jinja", "llama3": "meta-llama-Llama-3.3-70B-Instruct.jinja",
        "mistral": "mistralai-Mistral-Nemo-Instruct-2407.jinja", "phi3": "microsoft-Phi-3.5-mini-instruct.jinja",
        "gemma": "google-gemma-3-it.jinja"}
SPECIAL = {"qwen3": ("", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"), "mistral": ("<s>", "</s>"),
           "phi3": ("<s>", "<|endoftext|>"), "gemma": ("<bos>", "<eos>")}

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def call(cid, city):
    return {"id": cid, "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}


SYSTEM = {"role": "system", "content": "Be brief."}
PLAIN = [SYSTEM, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]
TOOL1 = [SYSTEM, {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [call("call00001", "Paris")]},
         {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call00001"},
         {"role": "assistant", "content": "It is 21 C in Paris."}]
TOOL2 = [{"role": "user", "content": "Paris or Rome: which is warmer?"},
         {"role": "assistant", "content": "", "tool_calls": [call("call00001", "Paris"), call("call00002", "Rome")]},
         {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call00001"},
         {"role": "tool", "content": "{\"temp\": 25}", "tool_call_id": "call00002"},
         {"role": "assistant", "content": "Rome."}]
THINK = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "Add."},
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "reasoning_content": "Ask the tool.", "tool_calls": [call("call00001", "Paris")]},
         {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call00001"},
         {"role": "assistant", "content": "21 C.", "reasoning_content": "The tool says 21."}]


def real(family, msgs, tools=None, gen=False):
    bos, eos = SPECIAL[family]
    text, _ = render_jinja_template([copy.deepcopy(msgs)], tools=tools, chat_template=(FX / REAL[family]).read_text(),
                                    add_generation_prompt=gen, bos_token=bos, eos_token=eos)
    return text[0]


def tok(family, jinja=None):
    bos, eos = SPECIAL[family]
    return SimpleNamespace(bos_token=bos, eos_token=eos, chat_template=jinja)


def ours(name, msgs, tools=None, gen=False, family=None):
    t = build_template(name, tok(family or name))
    return "".join(s for s, _ in t.segments(msgs, add_generation_prompt=gen, tools=tools))


def no_reasoning(msgs):
    return [{k: v for k, v in m.items() if k != "reasoning_content"} for m in msgs]


# ---- parity with the real templates ------------------------------------------------------------------------------
@pytest.mark.parametrize("conv, tools", [(PLAIN, None), (TOOL1, TOOLS), (TOOL2, TOOLS), (THINK, TOOLS)],
                         ids=["plain", "tool", "two-calls", "reasoning"])
def test_qwen3_renders_as_qwen3s_template(conv, tools):
    assert ours("qwen3", conv, tools) == real("qwen3", conv, tools)
    for cut in range(1, len(conv)):  # every generation prompt
        if conv[cut]["role"] == "assistant":
            assert ours("qwen3", conv[:cut], tools, gen=True) == real("qwen3", conv[:cut], tools, gen=True)


def test_chatml_has_qwens_tool_layout_without_the_empty_think_block():
    for conv, tools in [(TOOL1, TOOLS), (TOOL2, TOOLS), (PLAIN, None)]:
        assert ours("chatml", conv[:-1], tools, gen=True, family="qwen3") == real("qwen3", conv[:-1], tools, gen=True)
        # documented difference: Qwen3 writes an empty think block before the last reply, chatml does not
        assert real("qwen3", conv, tools).replace("<think>\n\n</think>\n\n", "") == ours("chatml", conv, tools, family="qwen3")


def test_llama3_renders_as_llama31s_template():
    for conv, tools in [(PLAIN, None), (TOOL1, TOOLS), (no_reasoning(THINK[2:]), TOOLS)]:
        assert ours("llama3", conv, tools) == real("llama3", conv, tools)
        assert ours("llama3", conv[:-1], tools, gen=True) == real("llama3", conv[:-1], tools, gen=True)
    # documented difference: several calls in one turn, one JSON per line, where Meta's template refuses them
    with pytest.raises(Exception, match="single tool-calls"):
        real("llama3", TOOL2, TOOLS)
    assert ('{"name": "get_weather", "parameters": {"city": "Paris"}}\n'
            '{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>') in ours("llama3", TOOL2, TOOLS)


def _nemo_spacing(text):
    return text.replace("[INST] ", "[INST]").replace(" [/INST]", "[/INST]")


def test_mistral_tool_tokens_match_mistral_nemo():
    # documented differences: tunelab's mistral keeps the v0.1 spacing "[INST] x [/INST]" (Nemo: "[INST]x[/INST]"),
    # and writes the system text into the first user turn; Nemo writes it only into a user turn that ends the
    # conversation (a generation prompt), so its training texts have none
    for conv, tools in [(PLAIN[1:], None), (TOOL1[1:], TOOLS), (TOOL2, TOOLS)]:
        assert _nemo_spacing(ours("mistral", conv, tools)) == real("mistral", conv, tools)
    assert _nemo_spacing(ours("mistral", TOOL1[:2], TOOLS, gen=True)) == real("mistral", TOOL1[:2], TOOLS, gen=True)
    assert "Be brief." not in real("mistral", TOOL1, TOOLS) and "Be brief." in ours("mistral", TOOL1, TOOLS)


def test_phi3_and_gemma_render_as_their_templates_and_refuse_tools():
    # documented difference: Phi-3.5's template ends a training text with its EOS; tunelab's phi3 stops at <|end|>
    assert ours("phi3", PLAIN) + "<|endoftext|>" == real("phi3", PLAIN)
    assert ours("gemma", PLAIN) == real("gemma", PLAIN)
    for name in ("phi3", "gemma"):
        assert ours(name, PLAIN[:-1], gen=True) == real(name, PLAIN[:-1], gen=True)
        with pytest.raises(TunelabError, match="has no tool-call format"):
            ours(name, TOOL1, TOOLS)


# ---- template: auto on each real template ------------------------------------------------------------------------
def auto(family):
    return build_template("auto", tok(family, (FX / REAL[family]).read_text()))


@pytest.mark.parametrize("family, conv", [("qwen3", THINK), ("llama3", no_reasoning(TOOL1)), ("mistral", TOOL2[:]),
                                          ("phi3", PLAIN), ("gemma", PLAIN)])
def test_auto_learns_replies_and_calls_not_tool_outputs(family, conv):
    t = auto(family)
    tools = TOOLS if family in ("qwen3", "llama3", "mistral") else None
    segs = t.segments(conv, tools=tools)
    text = "".join(s for s, _ in segs)
    assert (text.replace(t.eos, "") if t.add_eos else text) == real(family, conv, tools)  # add_eos: EOS after replies
    parts = learned_parts(segs, conv, t)
    learned = {p for p, _, flag in parts if flag}
    assert learned <= {"reply", "tool call", "reasoning"}
    assert not any(flag for p, _, flag in parts if p == "tool output")
    replies = [m for m in conv if m["role"] == "assistant"]
    targets = [s for s, flag in segs if flag]
    assert len(targets) == len(replies)  # one learned span per assistant turn, the prompt in between masked
    for m, target in zip(replies, targets):
        assert m["content"] in target
        for c in m.get("tool_calls", []):
            assert "get_weather" in target and c["function"]["arguments"]["city"] in target
    if tools:
        assert {"tool call", "tool output"} <= {p for p, _, _ in parts}
    else:
        with pytest.raises(TunelabError, match="has no tool-call format"):
            t.segments(TOOL1, tools=TOOLS)


def test_auto_qwen3_masks_an_earlier_reply_as_rendered_inside_the_conversation():
    segs = auto("qwen3").segments(THINK, tools=TOOLS)
    targets = [s for s, flag in segs if flag]
    # the first reply is rendered without its reasoning once a later user turn follows (Qwen3's own rule)
    assert targets[0] == "4<|im_end|>\n"
    assert targets[1].startswith("<think>\nAsk the tool.\n</think>\n\n<tool_call>\n")


# ---- reasoning options -------------------------------------------------------------------------------------------
def test_reasoning_learn_mask_drop_keep_and_empty_blocks():
    t = build_template("chatml", tok("qwen3"))
    ex = ChatExample(THINK, tools=TOOLS)
    learn = example_segments(ex, t)
    assert "Add." not in "".join(s for s, _ in learn)  # dropped from the turn before the last user message
    assert ("<think>\nThe tool says 21.\n</think>\n\n21 C.<|im_end|>\n", True) in learn
    kept = example_segments(ex, t, earlier_reasoning="keep")
    assert ("<think>\nAdd.\n</think>\n\n4<|im_end|>\n", True) in kept
    masked = example_segments(ex, t, reasoning="mask")
    assert masked[-2][0].endswith("<think>\nThe tool says 21.\n</think>\n\n") and not masked[-2][1]
    assert masked[-1] == ("21 C.<|im_end|>\n", True)
    q3 = example_segments(ChatExample(PLAIN), build_template("qwen3", tok("qwen3")))
    assert q3[-2][0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and not q3[-2][1]
    assert q3[-1] == ("See you.<|im_end|>\n", True)  # the empty think block is never learned


# ---- the exported Jinja ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["chatml", "qwen3", "llama3", "mistral"])
def test_exported_jinja_renders_the_training_text_with_tools(name):
    t = build_template(name, tok(name if name in SPECIAL else "qwen3"), system="Answer in French.")
    jinja = chat_template_jinja(t)
    assert not re.search(r"generation", jinja.replace("add_generation_prompt", ""))
    bos, eos = SPECIAL.get(name, SPECIAL["qwen3"])
    for conv in (TOOL1[1:], TOOL2, THINK):
        want = "".join(s for s, _ in t.segments(conv, tools=TOOLS))
        got = render_jinja_template([copy.deepcopy(conv)], tools=TOOLS, chat_template=jinja, bos_token=bos,
                                    eos_token=eos)[0][0]
        assert got == want
        prompt = "".join(s for s, _ in t.segments(conv[:1], add_generation_prompt=True, tools=TOOLS))
        assert render_jinja_template([conv[:1]], tools=TOOLS, chat_template=jinja, add_generation_prompt=True,
                                     bos_token=bos, eos_token=eos)[0][0] == prompt


@pytest.mark.parametrize("name", sorted(PLAIN_AS_TURNFORMAT))
def test_plain_chats_render_alike_through_the_jinja_and_the_turnformat(name):
    """The shortcut's premise: for these built-ins a chat without tools takes the TurnFormat path."""
    convs = [PLAIN, PLAIN[1:], PLAIN[1:3], [{"role": "user", "content": ' {{ "x" }} {% y %} '},
                                            {"role": "assistant", "content": "\n a \n"}]]
    t = build_template(name, tok(name if name in SPECIAL else "qwen3"))
    for system in (None, "Sys."):
        for conv in convs:
            for cut, gen in ((len(conv), False), (len(conv) - 1, True)):
                msgs = conv[:cut]
                if system and msgs[0]["role"] != "system":
                    msgs = [{"role": "system", "content": system}] + msgs
                via_format = Template(name, system=system, fmt=BUILTIN[name], eos=t.eos).segments(conv[:cut], gen)
                assert t._jinja_segments(msgs, gen, None) == via_format


@pytest.mark.parametrize("name, stop", [("chatml", "<|im_end|>\n"), ("qwen3", "<|im_end|>\n"), ("llama3", "<|eot_id|>"),
                                        ("mistral", "</s>")])
def test_the_learned_call_is_the_tool_syntax_text_and_parses_back(name, stop):
    from tunelab.data.tool_syntax import syntax_for

    t = build_template(name, tok(name if name in SPECIAL else "qwen3"))
    syntax = syntax_for(t)
    calls = TOOL2[1]["tool_calls"]
    target = [s for s, flag in t.segments(TOOL2, tools=TOOLS) if flag][0]
    assert target == syntax.format_calls(calls) + stop
    content, parsed = syntax.parse(target[:-len(stop)])
    assert content == "" and [c["function"]["name"] for c in parsed] == ["get_weather"] * 2
    assert [json.loads(c["function"]["arguments"]) for c in parsed] == [{"city": "Paris"}, {"city": "Rome"}]


def test_a_template_without_tools_names_the_example():
    from tunelab.data.tokenize import tokenize_example

    ex = ChatExample(TOOL1, where="d.jsonl:7", tools=TOOLS)
    with pytest.raises(TunelabError, match=r"data.template \(d.jsonl:7\): template 'gemma' has no tool-call format"):
        tokenize_example(ex, build_template("gemma", tok("gemma")), None, 512)


@pytest.mark.parametrize("model_type, arch, want", [("qwen3", "Qwen3ForCausalLM", "qwen3"),
                                                    ("llama", "LlamaForCausalLM", "chatml")])
def test_auto_without_a_chat_template_takes_the_familys_builtin_with_its_tools(model_type, arch, want, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [arch]}))
    t = build_template("auto", SimpleNamespace(bos_token="", eos_token="<|im_end|>", chat_template=None,
                                               name_or_path=str(tmp_path)))
    assert (t.name, t.extra) == (want, {"fallback_from": "auto"}) and t.supports_tools
    assert ours(want, TOOL1, TOOLS, family="qwen3") == "".join(s for s, _ in t.segments(TOOL1, tools=TOOLS))
