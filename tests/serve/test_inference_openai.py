"""The inference half of `tunelab serve`, through the official `openai` client against a real server
on the tiny Llama: models, chat (plain = streamed at temperature 0), completions, embeddings,
an adapter equal to its merged model, concurrent mixed requests, tenants, the adapter LRU,
the runs that are refused, knowledge bases with citations."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest
import yaml

MSG = [{"role": "user", "content": "How do I fine-tune a model with LoRA?"}]


@pytest.fixture(scope="module")
def alice(server):
    return server.client(server.keys["alice"])


@pytest.fixture(scope="module")
def bob(server):
    return server.client(server.keys["bob"])


def test_models_list_the_base_own_runs_and_embedders(server, alice, bob):
    base = server.state.base
    models = {m.id: m for m in alice.models.list()}
    assert set(models) == {base, "tuned", "minilm-l6", "minilm-l6-static"}
    assert models["tuned"].owned_by == "alice" and models["tuned"].model_extra["parent"] == base
    assert {m.id for m in bob.models.list()} == {base, "bobs", "minilm-l6", "minilm-l6-static"}
    assert alice.models.retrieve("tuned").id == "tuned"


def test_chat_plain_and_streamed_are_identical(alice, server):
    r = alice.chat.completions.create(model="tuned", messages=MSG, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 1 <= r.usage.completion_tokens <= 24
    chunks = list(alice.chat.completions.create(model="tuned", messages=MSG, max_tokens=24, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    # the prompt is the run's template (its system prompt included), tokenized as in training
    from tunelab.data.templates import Template
    from tunelab.data.tokenize import encode_segments

    tpl = Template.load(server.state.tenant_runs("alice") / "tuned" / "template.json")
    ids, _ = encode_segments(server.pool.tokenizer, tpl.segments(MSG, add_generation_prompt=True))
    assert r.usage.prompt_tokens == len(ids)


def test_stop_strings_seed_and_completions(alice, server):
    base = server.state.base
    a = alice.chat.completions.create(model=base, messages=MSG, max_tokens=16, temperature=0.8, seed=7)
    b = alice.chat.completions.create(model=base, messages=MSG, max_tokens=16, temperature=0.8, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content
    full = alice.completions.create(model="tuned", prompt="The quick brown", max_tokens=12, temperature=0)
    text = full.choices[0].text
    streamed = "".join(c.choices[0].text for c in alice.completions.create(
        model="tuned", prompt="The quick brown", max_tokens=12, temperature=0, stream=True))
    assert streamed == text and full.object == "text_completion"
    assert full.usage.prompt_tokens == len(server.pool.tokenizer("The quick brown")["input_ids"])
    if len(text.strip()) > 2:
        stop = text.strip()[1:3]
        cut = alice.completions.create(model="tuned", prompt="The quick brown", max_tokens=12, temperature=0,
                                       stop=[stop])
        assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_embeddings(alice):
    r = alice.embeddings.create(model="minilm-l6", input=["LoRA adapters", "low-rank adaptation", "pizza"])
    v = np.array([d.embedding for d in r.data])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]
    f = alice.embeddings.create(model="minilm-l6", input="LoRA adapters", encoding_format="float")
    assert np.allclose(f.data[0].embedding, v[0], atol=1e-6) and r.usage.prompt_tokens > 0


def test_adapter_output_equals_the_merged_model(alice, server, serve_env, tmp_path):
    """The run through the server (base + unmerged adapter) = `tunelab merge` + transformers greedy."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.data.templates import Template
    from tunelab.data.tokenize import encode_segments
    from tunelab.export.merge import merge_run

    run = server.state.tenant_runs("alice") / "tuned"
    merge_run(run, tmp_path / "merged", dtype="fp32")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tok = server.pool.tokenizer
    tpl = Template.load(run / "template.json")
    ids, _ = encode_segments(tok, tpl.segments(MSG, add_generation_prompt=True))
    with torch.no_grad():
        out = merged.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    new = out[0, len(ids):].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    want = tok.decode(new, skip_special_tokens=True)
    got = alice.chat.completions.create(model="tuned", messages=MSG, max_tokens=20, temperature=0)
    assert got.choices[0].message.content == want
    base = alice.chat.completions.create(model=server.state.base, messages=[{"role": "system", "content":
                                         "You are TuneBot."}] + MSG, max_tokens=20, temperature=0)
    assert base.choices[0].message.content != want  # the adapter changes the reply


def test_concurrent_mixed_requests_equal_sequential(alice, server):
    jobs = [("tuned", "Hello there"), (server.state.base, "Hi"), ("tuned", "What is a learning rate?"),
            (server.state.base, "Tell me about quantization and scales"), ("tuned", "LoRA?")] * 2

    def ask(job):
        model, text = job
        r = alice.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=48, temperature=0)
        return r.choices[0].message.content

    seq = [ask(j) for j in jobs[:5]]
    before = server.pool.batcher.max_rows_seen
    with ThreadPoolExecutor(len(jobs)) as ex:
        par = list(ex.map(ask, jobs))
    assert par == seq * 2
    assert server.pool.batcher.max_rows_seen >= max(before, 2)


def test_tenants_see_only_their_runs(alice, bob):
    with pytest.raises(openai.NotFoundError) as e:
        bob.chat.completions.create(model="tuned", messages=MSG, max_tokens=4)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        alice.completions.create(model="bobs", prompt="x", max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        bob.models.retrieve("tuned")
    assert bob.chat.completions.create(model="bobs", messages=MSG, max_tokens=4).usage.completion_tokens >= 1


def test_an_unknown_model_gets_a_did_you_mean_of_the_callers_own_names(alice, bob):
    """The 404 suggests the closest name the caller may use (its runs, the embedders); another
    tenant's run is never suggested, and the base is not when it is a server path (here)."""
    for call in (lambda: alice.chat.completions.create(model="tuneed", messages=MSG, max_tokens=4),
                 lambda: alice.completions.create(model="tunde", prompt="x", max_tokens=4),
                 lambda: alice.models.retrieve("tuned2")):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
        assert "did you mean 'tuned'?" in e.value.message, e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        alice.embeddings.create(model="minilm-l7", input="x")
    assert "did you mean 'minilm-l6'?" in e.value.message, e.value.message
    # bob's "bobs" is close to "bob", "bobs2", "tuned" is alice's: neither is offered across tenants
    for client, name, theirs in ((alice, "bobs2", "bobs"), (alice, "bob", "bobs"), (bob, "tuneed", "tuned")):
        for call in (lambda: client.chat.completions.create(model=name, messages=MSG, max_tokens=4),
                     lambda: client.completions.create(model=name, prompt="x", max_tokens=4),
                     lambda: client.models.retrieve(name)):
            with pytest.raises(openai.NotFoundError) as e:
                call()
            assert f"'{theirs}'" not in e.value.message and "did you mean" not in e.value.message, e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        bob.chat.completions.create(model="bobss", messages=MSG, max_tokens=4)
    assert "did you mean 'bobs'?" in e.value.message, e.value.message


def test_adapter_lru_never_reloads_the_base(server, alice):
    runs = server.state.tenant_runs("alice")
    for name in ("tuned2", "tuned3"):
        if not (runs / name).exists():
            shutil.copytree(runs / "tuned", runs / name)
    pool = server.pool
    base_w = pool.engine.w.blocks[0].qkv.w
    loads = pool.loads
    for name in ("tuned", "tuned2", "tuned3", "tuned3", "tuned"):
        alice.chat.completions.create(model=name, messages=MSG, max_tokens=2, temperature=0)
    assert len(pool.loaded) <= server.state.max_adapters == 2
    assert pool.loads - loads >= 3  # tuned (maybe cached) + tuned2 + tuned3 + tuned again after eviction
    assert pool.engine.w.blocks[0].qkv.w is base_w
    assert sum(len(p.named) for b in pool.engine.w.blocks for p in (b.qkv, b.o, b.gate_up, b.down)) \
        == len(pool.loaded) * 4 * len(pool.engine.w.blocks)


def _variant(runs, name, edit):
    src, dst = runs / "tuned", runs / name
    if not dst.exists():
        shutil.copytree(src, dst)
        edit(dst)
    return name


def test_runs_that_cannot_be_served_are_refused_with_the_reason(server, alice):
    runs = server.state.tenant_runs("alice")

    def set_cfg(key, value):
        def edit(d):
            cfg = yaml.safe_load((d / "config.yaml").read_text())
            cfg[key] = value if key != "model" else {**cfg["model"], "name": value}
            (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        return edit

    def full(d):
        shutil.rmtree(d / "adapter")
        (d / "model").mkdir()

    def saves_modules(d):
        p = d / "adapter" / "adapter_config.json"
        cfg = json.loads(p.read_text())
        cfg["modules_to_save"] = ["score"]
        p.write_text(json.dumps(cfg))

    def unfinished(d):
        (d / "DONE").unlink()

    cases = {_variant(runs, "cls", set_cfg("task", "classify")): "classify run",
             _variant(runs, "other-base", set_cfg("model", "/nonexistent/base")): "trained on base",
             _variant(runs, "full", full): "full fine-tune",
             _variant(runs, "head", saves_modules): "saves whole modules",
             _variant(runs, "unfinished", unfinished): "not finished"}
    for name, why in cases.items():
        with pytest.raises(openai.BadRequestError) as e:
            alice.chat.completions.create(model=name, messages=MSG, max_tokens=4)
        assert why in e.value.body["message"] and e.value.body["code"] == "model_not_supported", name
    listed = {m.id for m in alice.models.list()}
    assert "unfinished" not in listed and "cls" in listed


def test_knowledge_base_context_and_citations(server, alice, bob, tmp_path):
    from tunelab.rag import index
    from tunelab.serve.embeddings import kb_root

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lora.md").write_text("# LoRA\n\nLoRA trains two small matrices per layer; the base stays frozen.\n")
    (docs / "pizza.md").write_text("# Pizza\n\nA margherita has tomato, mozzarella and basil.\n")
    index([docs], directory=kb_root(server.state, "alice") / "notes", embedder="minilm-l6", log=None)
    q = [{"role": "user", "content": "What does LoRA train?"}]
    plain = alice.chat.completions.create(model="tuned", messages=q, max_tokens=4, temperature=0)
    r = alice.chat.completions.create(model="tuned", messages=q, max_tokens=4, temperature=0,
                                      extra_body={"knowledge_base": "notes", "knowledge_base_k": 1})
    cites = r.model_extra["citations"]
    assert len(cites) == 1 and cites[0]["source"].endswith("lora.md") and "two small matrices" in cites[0]["text"]
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 10  # the passage is in the prompt
    # 4 tokens cite nothing: the Sources line is added, as `tunelab rag ask` does
    assert r.model_extra["cited_by"] == "added" and r.choices[0].message.content.endswith("Sources: [1] lora.md § LoRA")
    assert "cited_by" not in (plain.model_extra or {})
    chunks = list(alice.chat.completions.create(model="tuned", messages=q, max_tokens=4, stream=True,
                                                extra_body={"knowledge_base": "notes"}))
    assert chunks[0].model_extra["citations"][0]["source"].endswith("lora.md")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Sources: [1] lora.md § LoRA" in streamed and chunks[-1].model_extra["cited_by"] == "added"
    with pytest.raises(openai.NotFoundError):  # another tenant's knowledge base
        bob.chat.completions.create(model="bobs", messages=q, max_tokens=4, extra_body={"knowledge_base": "notes"})


def test_a_closed_stream_stops_its_row(alice, server):
    import time

    batcher = server.pool.batcher
    full = alice.completions.create(model="tuned", prompt="The quick brown", max_tokens=200, temperature=0)
    assert full.usage.completion_tokens == 200  # this prompt does not meet EOS early
    steps = batcher.steps
    stream = alice.completions.create(model="tuned", prompt="The quick brown", max_tokens=2000, temperature=0,
                                      stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while batcher.rows and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not batcher.rows and batcher.steps - steps < 1000  # cancelled, not decoded to the end
