"""Preference records -> PreferenceExample -> token ids that match `tunelab generate`'s prompts."""

import json

import pytest

from tunelab.config import from_dict
from tunelab.train.recipes.preference import load_pairs, pair_ids


@pytest.fixture(scope="module")
def tok():
    from tunelab.models.tiny import build_tokenizer

    return build_tokenizer()


def write(tmp_path, rows):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def test_val_split_is_seeded(tmp_path):
    p = write(tmp_path, [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10)])
    cfg = from_dict({"task": "dpo", "data": {"train": str(p), "val_split": 0.2}})
    tr, va = load_pairs(cfg)
    assert type(tr[0]).__name__ == "PreferenceExample"
    assert len(tr) == 8 and len(va) == 2 and [x.where for x in load_pairs(cfg)[1]] == [x.where for x in va]


def test_prompt_ids_are_the_generation_prompt_and_replies_end_the_turn(tok):
    from tunelab.data.formats import PreferenceExample
    from tunelab.data.templates import build_template
    from tunelab.infer.generate import Generator

    template = build_template("auto", tok, system="Be brief.")
    ex = PreferenceExample([{"role": "user", "content": "Tell me about the lazy dog."}], "Short. -- Bot", "Long story")
    r = pair_ids(ex, template, tok, max_length=512, max_prompt=256)
    gen = Generator(None, tok, template)
    assert r["prompt_ids"] == gen.prompt_ids(ex.prompt)[0].tolist()  # exactly what `tunelab generate` feeds
    assert tok.decode(r["chosen_ids"]) == "Short. -- Bot<|im_end|>\n"
    assert tok.decode(r["rejected_ids"]) == "Long story<|im_end|>\n"
    assert not r["truncated"]
    # max_prompt keeps the prompt's end; max_length then cuts the replies' ends
    s = pair_ids(ex, template, tok, max_length=len(r["prompt_ids"]) - 5 + 3, max_prompt=len(r["prompt_ids"]) - 5)
    assert s["prompt_ids"] == r["prompt_ids"][5:] and s["chosen_ids"] == r["chosen_ids"][:3] and s["truncated"]


def test_loss_type_list():
    from tunelab.train.recipes.dpo import loss_types

    assert loss_types("sigmoid") == ["sigmoid"]
    assert loss_types("sigmoid, sft") == ["sigmoid", "sft"]
