import pytest

from tunelab.data.formats import ChatExample
from tunelab.data.templates import BUILTIN, Template, build_template
from tunelab.data.tokenize import IGNORE, collate, tokenize_example
from tunelab.errors import TunelabError

CONV = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def text(t: Template, msgs, gen=False):
    return "".join(s for s, _ in t.segments(msgs, add_generation_prompt=gen))


def test_llama2_with_system(tok):
    t = build_template("llama2", tok, system="Be brief.")
    assert text(t, CONV[:2]) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s>"


def test_mistral_gemma_chatml_qa_render(tok):
    assert text(build_template("mistral", tok), CONV[:2]) == "<s>[INST] Hi there [/INST]Hello!</s>"
    assert text(build_template("gemma", tok), CONV[:2]) == (
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n")
    assert text(build_template("chatml", tok, system="S"), CONV[:1], gen=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert text(build_template("qa", tok), CONV[:2]) == (
        "Please answer the following question.\n\nQ: Hi there\n\nA: Hello!<|im_end|>\n\n")


def test_auto_uses_model_template_and_matches_hf(tok):
    t = build_template("auto", tok)
    assert t.name == "auto"
    assert text(t, CONV) == tok.apply_chat_template(CONV, tokenize=False)
    assert t.prompt_text(CONV[:1]) == tok.apply_chat_template(CONV[:1], tokenize=False, add_generation_prompt=True)


def test_only_reply_tokens_are_learned_and_eos_is_included(tok):
    t = build_template("auto", tok)
    ex = tokenize_example(ChatExample(CONV), t, tok, max_length=512)
    learned = tok.decode([i for i, l in zip(ex.input_ids, ex.labels) if l != IGNORE])
    assert learned == "Hello!<|im_end|>\nSee you.<|im_end|>\n"
    masked = [i for i, l in zip(ex.input_ids, ex.labels) if l == IGNORE]
    assert "Hi there" in tok.decode(masked) and "Hello" not in tok.decode(masked)
    assert tok.eos_token_id in [l for l in ex.labels if l != IGNORE]
    everything = tokenize_example(ChatExample(CONV), t, tok, max_length=512, train_on="all")
    assert everything.labels == everything.input_ids


def test_eos_appended_for_formats_without_end_token(tok):
    t = build_template("alpaca", tok)
    ex = tokenize_example(ChatExample(CONV[:2]), t, tok, max_length=512)
    assert tok.eos_token_id in [l for l in ex.labels if l != IGNORE]


def test_truncation_sides(tok):
    t = build_template("chatml", tok)
    full = tokenize_example(ChatExample(CONV), t, tok, max_length=512)
    right = tokenize_example(ChatExample(CONV), t, tok, max_length=10, truncation_side="right")
    left = tokenize_example(ChatExample(CONV), t, tok, max_length=10, truncation_side="left")
    assert right.input_ids == full.input_ids[:10] and left.input_ids == full.input_ids[-10:]
    assert right.truncated == left.truncated == len(full.input_ids) - 10


def test_collate_pads_and_masks(tok):
    t = build_template("chatml", tok)
    a = tokenize_example(ChatExample(CONV[:2]), t, tok, 512)
    b = tokenize_example(ChatExample(CONV), t, tok, 512)
    batch = collate([a, b], pad_id=tok.pad_token_id)
    n = len(b.input_ids)
    assert batch["input_ids"].shape == (2, n)
    assert batch["attention_mask"][0].sum() == len(a.input_ids)
    assert (batch["labels"][0, len(a.input_ids):] == IGNORE).all()


def test_custom_template_and_roundtrip(tok, tmp_path):
    t = build_template("custom", tok, system="Sys", custom={"system": "## {content}\n", "user": "U: {content}\n",
                                                             "assistant_prefix": "A: ", "stop": "<eos>"})
    assert text(t, CONV[:2]) == "## Sys\nU: Hi there\nA: Hello!<|im_end|>"
    t.save(tmp_path / "t.json")
    assert text(Template.load(tmp_path / "t.json"), CONV[:2]) == text(t, CONV[:2])


def test_unknown_template(tok):
    with pytest.raises(TunelabError, match="did you mean 'chatml'"):
        build_template("chatm", tok)
    assert set(BUILTIN) >= {"llama2", "mistral", "gemma", "chatml", "alpaca", "qa"}


# ---- the chat template exported beside a run's weights (chat_template_jinja) --------------------------------------
CUSTOM = {"system": "## {content}\n", "user": "U: {content}\n", "assistant_prefix": "A: ", "stop": "<eos>"}
CONVERSATIONS = {
    "one turn": CONV[:2],
    "two turns": CONV,
    "system message": [{"role": "system", "content": "Answer in French."}, *CONV],
    "braces and quotes": [{"role": "user", "content": 'say "{x}" {{y}} \\n ok'},
                          {"role": "assistant", "content": "{content} é 😀"}],
}


@pytest.mark.parametrize("name", [*BUILTIN, "custom", "auto"])
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_saved_tokenizer_renders_like_tunelab(tok, tmp_path, name, system):
    """apply_chat_template of the tokenizer a run saves == tunelab's own rendering, for every template:
    whole conversations (ending with a reply) and generation prompts (ending with a user turn)."""
    from transformers import AutoTokenizer

    from tunelab.runs.rundir import save_tokenizer_with_template

    t = build_template(name, tok, system=system, custom=CUSTOM if name == "custom" else None)
    t.save(tmp_path / "template.json")
    save_tokenizer_with_template(tok, tmp_path / "out", tmp_path / "template.json")
    saved = AutoTokenizer.from_pretrained(tmp_path / "out")
    for what, conv in CONVERSATIONS.items():
        assert saved.apply_chat_template(conv, tokenize=False) == text(t, conv), what
        assert saved.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True) == \
            t.prompt_text(conv[:-1]), what


def test_exported_template_follows_hf_generation_prompt_semantics(tok):
    """A conversation ending with a user turn gets the assistant prefix only with add_generation_prompt."""
    from tunelab.data.templates import chat_template_jinja

    jinja = chat_template_jinja(build_template("chatml", tok))
    plain = tok.apply_chat_template(CONV[:1], chat_template=jinja, tokenize=False)
    assert plain == "<|im_start|>user\nHi there<|im_end|>\n"
    assert tok.apply_chat_template(CONV[:1], chat_template=jinja, tokenize=False,
                                   add_generation_prompt=True) == plain + "<|im_start|>assistant\n"


def test_auto_template_is_exported_as_the_models_own(tok):
    from tunelab.data.templates import chat_template_jinja

    assert chat_template_jinja(build_template("auto", tok)) == tok.chat_template
