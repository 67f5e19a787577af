"""data.template auto on a base model (no chat template): the family's built-in format (models/base_format.py)."""

from __future__ import annotations

import json

import pytest

from tunelab.data.templates import build_template
from tunelab.models.tiny import build_tokenizer


@pytest.mark.parametrize("model_type,expected", [("gemma3_text", "gemma"), ("gemma2", "gemma"),
                                                 ("mistral", "mistral"), ("gpt2", "alpaca")])
def test_auto_without_chat_template_uses_family_format(tmp_path, model_type, expected):
    tok = build_tokenizer()
    tok.chat_template = None  # a base model's tokenizer
    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    from transformers import AutoTokenizer

    t = build_template("auto", AutoTokenizer.from_pretrained(str(tmp_path)))
    assert (t.name, t.extra) == (expected, {"fallback_from": "auto"})
    if expected == "gemma":
        text = "".join(s for s, _ in t.segments([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]))
        assert "<start_of_turn>model\nyo<end_of_turn>" in text


def test_auto_with_chat_template_is_unchanged(tmp_path):
    tok = build_tokenizer()  # has a ChatML chat template
    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    from transformers import AutoTokenizer

    assert build_template("auto", AutoTokenizer.from_pretrained(str(tmp_path))).name == "auto"
