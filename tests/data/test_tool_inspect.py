"""`data inspect` and tokenization of tool-use data: the call is learned, the tool's output is not."""

import json
import re

from tunelab.config import from_dict
from tunelab.data.formats import to_chat
from tunelab.data.inspect import inspect_config
from tunelab.data.sources import Record
from tunelab.data.templates import build_template
from tunelab.data.tokenize import IGNORE, tokenize_example

RECORD = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
          "messages": [{"role": "user", "content": "Weather in Paris?"},
                       {"role": "assistant", "content": None, "tool_calls": [
                           {"id": "c1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                       {"role": "tool", "tool_call_id": "c1", "content": "sunny and 21 degrees"},
                       {"role": "assistant", "content": "<think>\nThe tool says sunny.\n</think>\n\nSunny, 21 C."}]}


def test_learned_tokens_are_the_call_and_the_reply_not_the_tool_output(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = to_chat(Record(RECORD, "d.jsonl:1"))
    t = build_template("chatml", tok)
    for reasoning, think_learned in (("learn", True), ("mask", False)):
        te = tokenize_example(ex, t, tok, 4096, reasoning=reasoning)
        assert te.truncated == 0
        learned = tok.decode([i for i, lab in zip(te.input_ids, te.labels) if lab != IGNORE])
        masked = tok.decode([i for i, lab in zip(te.input_ids, te.labels) if lab == IGNORE])
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>' in learned
        assert "Sunny, 21 C.<|im_end|>" in learned
        assert "sunny and 21 degrees" in masked and "sunny and 21" not in learned
        assert ("The tool says sunny." in learned) is think_learned


def test_data_inspect_reports_what_is_learned_of_calls_reasoning_and_tool_outputs(tiny_model_dir, tmp_path):
    path = tmp_path / "tools.jsonl"
    path.write_text("\n".join(json.dumps(RECORD) for _ in range(3)) + "\n")
    cfg = from_dict({"model": {"name": str(tiny_model_dir)},
                     "data": {"train": str(path), "template": "chatml", "max_length": 4096}})
    line = next(n for n in inspect_config(cfg).notes if n.startswith("tool calls and reasoning"))
    learned, masked = re.match(r".* in 3 train examples: learned tokens: (.*); masked: (.*)", line).groups()
    parts = {p.rsplit(" ", 1)[0]: int(p.rsplit(" ", 1)[1]) for p in learned.split(", ")}
    assert set(parts) == {"reply", "tool call", "reasoning"} and all(v > 0 for v in parts.values())
    assert masked.startswith("tool output ") and int(masked.split()[-1]) > 0
    cfg.data.reasoning = "mask"
    line = next(n for n in inspect_config(cfg).notes if n.startswith("tool calls and reasoning"))
    learned, masked = line.split("learned tokens: ")[1].split("; masked: ")
    assert "reasoning" not in learned and "reasoning" in masked


REAL = {"qwen3": "Qwen-Qwen3-0.6B.jinja", "llama3": "meta-llama-Llama-3.3-70B-Instruct.jinja",
        "mistral": "mistralai-Mistral-Nemo-Instruct-2407.jinja", "phi3": "microsoft-Phi-3.5-mini-instruct.jinja",
        "gemma": "google-gemma-3-it.jinja"}


def test_data_inspect_on_each_real_template(tiny_model_dir, tmp_path):
    """template: auto with each family's real chat template: replies and calls learned, tool outputs not; the two
    templates without tools (Phi-3.5, Gemma 3) learn the replies and their reasoning."""
    from pathlib import Path

    from transformers import AutoTokenizer

    fixtures = Path(__file__).parent.parent / "fixtures" / "chat_templates"
    plain = {"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"}]}
    tool_record = json.loads(json.dumps(RECORD))
    del tool_record["messages"][1]["tool_calls"][0]["id"], tool_record["messages"][2]["tool_call_id"]  # call00001
    for family, name in REAL.items():
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        tok.chat_template = (fixtures / name).read_text()
        with_tools = family in ("qwen3", "llama3", "mistral")
        path = tmp_path / f"{family}.jsonl"
        path.write_text(json.dumps(tool_record if with_tools else plain) + "\n")
        cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "data": {"train": str(path), "max_length": 4096}})
        rep = inspect_config(cfg, tokenizer=tok)
        line = next(n for n in rep.notes if n.startswith("tool calls and reasoning"))
        learned, masked = line.split("learned tokens: ")[1].split("; masked: ")
        assert "tool output" not in learned, (family, line)
        if with_tools:
            assert "tool call" in learned and "reply" in learned and "tool output" in masked, (family, line)
        else:
            assert "reply" in learned and "reasoning" in learned and masked == "nothing", (family, line)
