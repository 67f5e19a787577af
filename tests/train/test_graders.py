"""train/graders: each OpenAI grader type's values by hand (and against nltk / rouge_score where installed),
templates, the python grader's child process (raise, timeout, no network), multi's formula, the judge's
request and score parsing, validation messages, and a grader as a GRPO reward."""

import json
import warnings

import httpx2 as httpx
import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.train.graders import GradeContext, run_grader, validate_grader
from tunelab.train.graders.similarity_metrics import METRICS
from tunelab.train.graders.template import check_template
from tunelab.train.grpo_config import grpo_settings
from tunelab.train.rewards import load_rewards, score

OUT = "{{sample.output_text}}"
CTX = GradeContext(python_timeout_s=2.0)


def string_check(op, reference="{{item.answer}}"):
    return {"type": "string_check", "name": "s", "input": OUT, "reference": reference, "operation": op}


def grade(grader, texts, items, ctx=CTX):
    return run_grader(grader, texts, items, ctx)


def scores(grader, texts, items, ctx=CTX):
    return [g.score for g in grade(grader, texts, items, ctx)]


@pytest.mark.parametrize("op, expect", [("eq", [1, 0, 0, 0]), ("ne", [0, 1, 1, 1]), ("like", [1, 1, 0, 0]),
                                        ("ilike", [1, 1, 1, 0])])
def test_string_check_operations(op, expect):
    texts = ["Paris", "It is Paris.", "it is PARIS", "Lyon"]
    assert scores(string_check(op), texts, [{"answer": "Paris"}] * 4) == expect


def test_templates_fill_as_openai():
    g = string_check("eq", reference="{{ item.a.b }}|{{item.n}}|{{item.flag}}|{{item.xs.1}}|{{sample.output_json.k}}")
    text = '{"k": [1, "x"]}'
    item = {"a": {"b": "deep"}, "n": 3, "flag": True, "xs": ["p", {"q": None}]}
    expected = 'deep|3|true|{"q": null}|[1, "x"]'
    g2 = dict(g, input=expected)
    assert scores(g2, [text], [item]) == [1.0]
    missing = grade(string_check("eq"), ["a"], [{"other": 1}])[0]
    assert missing.score == 0.0 and missing.errors == {"invalid_variable_error": True}
    not_json = grade(dict(g2, reference="{{sample.output_json.k}}"), ["plain"], [item])[0]
    assert not_json.errors == {"sample_parse_error": True}
    for bad in ("{{foo.bar}}", "{{sample.output_text.x}}", "{{item}}", "{{sample.choices}}"):
        with pytest.raises(TunelabError, match="template"):
            check_template(bad, "grader.input")


def test_similarity_by_hand():
    assert METRICS["fuzzy_match"]("kitten", "sitting") == pytest.approx(8 / 13)  # LCS "ittn": 2 x 4 / 13
    assert METRICS["fuzzy_match"]("", "") == 1.0
    # hyp "the cat sat", ref "the cat is here": unigram overlap 2 -> P 2/3, R 2/4, F = 2PR/(P+R) = 4/7
    assert METRICS["rouge_1"]("The cat sat", "the cat is here") == pytest.approx(4 / 7)
    assert METRICS["rouge_2"]("The cat sat", "the cat is here") == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert METRICS["rouge_l"]("a b c d", "a x c d") == pytest.approx(0.75)  # LCS a c d: P = R = 3/4
    # gleu: 1..4-grams of "a b c" (6) vs "a b d" (6): matches a, b, "a b" = 3 -> min(3/6, 3/6)
    assert METRICS["gleu"]("a b c", "a b d") == pytest.approx(0.5)
    # bleu, identical 4-token sentences: every p_n = 1, BP = 1
    assert METRICS["bleu"]("w x y z", "w x y z") == pytest.approx(1.0)
    assert METRICS["bleu"]("q", "w x y z") == 0.0  # no unigram match


PAIRS = [("the cat sat on the mat today", "the cat is on the mat"), ("a b c d e f", "a b c d e f g"),
         ("The quick brown fox jumps over the lazy dog", "the quick brown dog jumps on the lazy fox"),
         ("It's 42, really!", "it is 42 really"), ("hello", "world")]


def test_similarity_matches_reference_packages():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    nltk_gleu = pytest.importorskip("nltk.translate.gleu_score")
    sc = rouge_scorer.RougeScorer([f"rouge{n}" for n in range(1, 6)] + ["rougeL"])
    for hyp, ref in PAIRS:
        got = sc.score(ref, hyp)
        for n in range(1, 6):
            assert METRICS[f"rouge_{n}"](hyp, ref) == pytest.approx(got[f"rouge{n}"].fmeasure, abs=1e-12)
        assert METRICS["rouge_l"](hyp, ref) == pytest.approx(got["rougeL"].fmeasure, abs=1e-12)
        with warnings.catch_warnings():  # nltk warns about the zero n-gram counts it floors
            warnings.simplefilter("ignore")
            assert METRICS["bleu"](hyp, ref) == pytest.approx(nltk_bleu.sentence_bleu([ref.split()], hyp.split()),
                                                              rel=1e-9, abs=0)
        assert METRICS["gleu"](hyp, ref) == pytest.approx(nltk_gleu.sentence_gleu([ref.split()], hyp.split()))


def test_text_similarity_grader_and_cosine_through_the_embedder():
    g = {"type": "text_similarity", "name": "t", "input": OUT, "reference": "{{item.ref}}",
         "evaluation_metric": "fuzzy_match"}
    assert scores(g, ["kitten"], [{"ref": "sitting"}]) == [pytest.approx(8 / 13)]
    seen = []

    def embed(texts):  # a fixed 2-d embedding per text, unit length
        seen.append(list(texts))
        table = {"a": [1.0, 0.0], "b": [0.6, 0.8], "c": [0.0, 1.0]}
        return np.array([table[t] for t in texts])
    cos = dict(g, evaluation_metric="cosine")
    got = scores(cos, ["a", "b"], [{"ref": "b"}, {"ref": "c"}], GradeContext(embed=embed))
    assert got == [pytest.approx(0.6), pytest.approx(0.8)]
    assert seen == [["a", "b", "b", "c"]]  # one call for the batch: inputs, then references


def test_python_grader_scores_raises_times_out_and_has_no_network():
    src = ("import json\n"
           "def grade(sample, item):\n"
           "    t = sample['output_text']\n"
           "    if t == 'raise': raise ValueError('bad sample')\n"
           "    if t == 'loop':\n"
           "        while True: pass\n"
           "    if t == 'net':\n"
           "        import socket; socket.create_connection(('127.0.0.1', 9))\n"
           "    if t == 'str': return 'high'\n"
           "    print('to stderr, not the results')\n"
           "    bonus = sample['output_json'].get('bonus', 0) if isinstance(sample['output_json'], dict) else 0\n"
           "    return float(t == item['answer']) + bonus\n")
    g = {"type": "python", "name": "p", "source": src}
    texts = ["42", "41", "raise", "loop", "net", "str", '{"bonus": 0.5}']
    out = grade(g, texts, [{"answer": "42"}] * 7, GradeContext(python_timeout_s=0.5))
    assert [x.score for x in out] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]
    assert [x.ok for x in out] == [True, True, False, False, False, False, True]
    assert "ValueError: bad sample" in out[2].errors["python_grader_runtime_error_details"]
    assert "timed out" in out[3].errors["python_grader_runtime_error_details"]
    assert "PermissionError" in out[4].errors["python_grader_runtime_error_details"]
    assert "not a finite number" in out[5].errors["python_grader_runtime_error_details"]
    assert all(x.errors.get("python_grader_runtime_error") for x in out[2:6])


def test_python_grader_blocks_processes_files_and_a_broken_top_level(tmp_path):
    spawn = {"type": "python", "name": "p",
             "source": "import subprocess\ndef grade(s, i):\n    return len(subprocess.run(['true']).args)\n"}
    assert grade(spawn, ["x"], [{}])[0].errors["python_grader_runtime_error"] is True
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    files = {"type": "python", "name": "p", "source": (
        "import os, statistics\n"
        "def grade(sample, item):\n"
        "    t = sample['output_text']\n"
        "    if t == 'read': return len(open(item['path']).read())\n"
        "    if t == 'list': return len(os.listdir(os.path.dirname(item['path'])))\n"
        "    if t == 'write': open(item['path'], 'w')\n"
        "    with open('own.txt', 'w') as f: f.write('ok')\n"  # its own working folder
        "    return float(open('own.txt').read() == 'ok') + statistics.mean([0, 0])\n")}
    out = grade(files, ["read", "list", "write", "own"], [{"path": str(secret)}] * 4)
    assert [x.score for x in out] == [0.0, 0.0, 0.0, 1.0]
    assert all("PermissionError" in x.errors["python_grader_runtime_error_details"] for x in out[:3])
    assert secret.read_text() == "key"
    top = {"type": "python", "name": "p", "source": "raise RuntimeError('at import')\ndef grade(s, i):\n    return 1\n"}
    out = grade(top, ["x", "y"], [{}, {}])
    assert [x.score for x in out] == [0.0, 0.0] and "at import" in out[0].errors["python_grader_runtime_error_details"]


def test_multi_formula():
    g = {"type": "multi", "name": "m", "calculate_output": "0.5 * exact + 0.5 * fuzzy ^ 2 - min(0, exact)",
         "graders": {"exact": string_check("eq"),
                     "fuzzy": {"type": "text_similarity", "name": "f", "input": OUT, "reference": "{{item.answer}}",
                               "evaluation_metric": "fuzzy_match"}}}
    out = grade(g, ["Paris", "Pari"], [{"answer": "Paris"}] * 2)
    assert out[0].score == pytest.approx(1.0) and out[0].sub == {"exact": 1.0, "fuzzy": 1.0}
    assert out[1].score == pytest.approx(0.5 * (8 / 9) ** 2)  # ^ is a power, bound tighter than *
    div = dict(g, calculate_output="exact / fuzzy + log(exact)")
    bad = grade(div, ["Lyon"], [{"answer": "Paris"}])[0]  # log(0)
    assert bad.score == 0.0 and bad.errors == {"formula_parse_error": True}
    for formula, msg in [("exact + nope", "no grader"), ("__import__('os').system('x')", "calls"),
                         ("exact.real", "Attribute"), ("(lambda: 1)()", "calls"), ("'a'", "constant"),
                         ("exact if fuzzy else 0", "IfExp"), ("exact +", "does not parse")]:
        with pytest.raises(TunelabError, match=msg):
            validate_grader(dict(g, calculate_output=formula))
    assert grade(dict(g, calculate_output="9 ^ 9 ^ 9 ^ 9"), ["Paris"], [{"answer": "Paris"}])[0].errors == \
        {"formula_parse_error": True}  # floats: overflows at once instead of a huge integer


def judge_context(replies: list, seen: list) -> GradeContext:
    """An OpenAI client whose transport answers a chat request whose user turn starts "Q: k" with replies[k]
    (a dict: the message; an int: that HTTP status) and records the request bodies (requests run in parallel)."""
    import openai

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        r = replies[int(body["messages"][-1]["content"].split()[1])]
        if isinstance(r, int):
            return httpx.Response(r, json={"error": {"message": "down", "type": "server_error"}})
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 0, "model": "judge-1",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **r}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})
    client = openai.OpenAI(base_url="http://judge/v1", api_key="k", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    return GradeContext(client=lambda: client)


def test_score_model_request_and_parsing():
    pytest.importorskip("openai")
    g = {"type": "score_model", "name": "j", "model": "judge", "range": [0, 10],
         "sampling_params": {"temperature": 0.0, "max_completions_tokens": 8, "seed": 3},
         "input": [{"role": "developer", "content": "Score 0-10."},
                   {"role": "user", "content": [{"type": "input_text", "text": "Q: {{item.q}}"}, "A: " + OUT]}]}
    seen = []
    replies = [{"content": '{"result": 7, "steps": []}'}, {"content": "I'd say 3.5 out of 10... final: 8"},
               {"content": "great"}, {"content": "11"}, {"content": None, "refusal": "no"}, 500]
    ctx = judge_context(replies, seen)
    out = grade(g, ["x"] * 6, [{"q": k} for k in range(6)], ctx)
    first = next(b for b in seen if b["messages"][-1]["content"].startswith("Q: 0"))
    assert first["messages"] == [{"role": "system", "content": "Score 0-10."}, {"role": "user", "content": "Q: 0\nA: x"}]
    assert first["temperature"] == 0.0 and first["max_completion_tokens"] == 8 and first["seed"] == 3
    assert len(seen) == 6
    assert [x.score for x in out] == [7.0, 8.0, 0.0, 0.0, 0.0, 0.0]
    assert [sorted(k for k, v in x.errors.items() if v is True) for x in out] == [
        [], [], ["model_grader_parse_error"], ["model_grader_parse_error"], ["model_grader_refusal_error"],
        ["model_grader_server_error"]]
    assert out[0].token_usage == {"judge": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                                            "cached_tokens": 0}}
    assert out[0].sampled_model_name == "judge-1"


@pytest.mark.parametrize("grader, msg", [
    ({"type": "string_check", "name": "s", "input": OUT, "reference": "x", "operation": "eq", "extra": 1,
      "more": 2}, "unknown field\\(s\\) extra, more"),
    ({"type": "string_check", "name": "s", "input": OUT, "operation": "eq"}, "missing reference"),
    ({"type": "string_check", "name": "s", "input": OUT, "reference": "x", "operation": "regex"}, "operation"),
    ({"type": "text_similarity", "name": "t", "input": OUT, "reference": "x", "evaluation_metric": "meteor"},
     "meteor is not supported"),
    ({"type": "python", "name": "p", "source": "def grade(s, i): return 1", "image_tag": "2025-05-08"},
     "unsupported field\\(s\\) image_tag"),
    ({"type": "python", "name": "p", "source": "def other(): pass"}, "no grade"),
    ({"type": "python", "name": "p", "source": "def grade(:"}, "does not parse"),
    ({"type": "label_model", "name": "l"}, "label_model graders are not supported"),
    ({"type": "nope"}, "unknown grader type"),
    ({"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://x"}]}]}, "input_image"),
    ({"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}],
      "range": [1, 0]}, "range"),
    ({"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}],
      "sampling_params": {"temperture": 1}}, "temperture"),
    ({"type": "multi", "name": "m", "calculate_output": "a", "graders": {"a": {"type": "multi", "name": "x",
      "graders": {}, "calculate_output": "1"}}}, "another multi"),
    ({"type": "string_check", "name": "s", "input": "{{samples.output_text}}", "reference": "x",
      "operation": "eq"}, "unknown template variable"),
])
def test_validation_names_the_problem(grader, msg):
    with pytest.raises(TunelabError, match=msg):
        validate_grader(grader, "grader")


def test_grader_as_grpo_reward_counts_failures():
    g = grpo_settings({"rewards": [
        {"grader": string_check("eq"), "weight": 2.0},
        {"grader": {"type": "python", "name": "py", "source": "def grade(s, i):\n    return 1 / len(s['output_text'])"}},
    ]})
    rs = load_rewards(g.rewards, ctx=CTX)
    assert [r.name for r in rs] == ["s", "py"]
    total, per = score(rs, ["p"] * 3, ["81", "8", ""], {"answer": ["81", "81", "81"]})
    assert per == {"s": [1.0, 0.0, 0.0], "py": [0.5, 1.0, 0.0]}
    assert total == [2.5, 1.0, 0.0]
    assert rs[1].fn.errors == {"python_grader_runtime_error": 1}  # 1 / 0: scored 0 and counted
    with pytest.raises(TunelabError, match=r"grpo.rewards\[0\].grader: unknown field\(s\) colour"):
        grpo_settings({"rewards": [{"grader": dict(string_check("eq"), colour="red")}]})
    with pytest.raises(TunelabError, match="one of 'name'"):
        grpo_settings({"rewards": [{"grader": string_check("eq"), "name": "regex"}]})


def test_a_grpo_run_with_grader_rewards(tmp_path, tiny_model_dir):
    """One GRPO step on the tiny Llama, its rewards graders (a string check and python graders):
    the run finishes and logs each grader's reward under its name, and a third that always raises only counts."""
    from tunelab.train import run

    rows = [{"prompt": "Say 4.", "answer": "4"}, {"prompt": "Say 7.", "answer": "7"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"task": "grpo", "model": {"name": str(tiny_model_dir)}, "data": {"train": str(tmp_path / "train.jsonl")},
           "method": {"name": "lora", "r": 2, "alpha": 4},
           "train": {"max_steps": 1, "precision": "fp32", "warmup_ratio": 0.0},
           "grpo": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 4, "rewards": [
               {"grader": dict(string_check("like"), name="has_answer")},
               {"grader": {"type": "python", "name": "short",
                           "source": "def grade(sample, item):\n    return 1.0 / (1 + len(sample['output_text']))"},
                "weight": 0.5},
               {"grader": {"type": "python", "name": "broken", "source": "def grade(sample, item):\n    raise ValueError"},
                "weight": 0.25}]},
           "output": {"dir": str(tmp_path / "runs"), "name": "g"}}
    out = run(cfg, quiet=True)
    assert (out.run_dir / "DONE").exists()
    step = [json.loads(x) for x in (out.run_dir / "metrics.jsonl").read_text().splitlines() if '"reward"' in x][0]
    assert 0 <= step["rewards/has_answer/mean"] <= 1 and 0 < step["rewards/short/mean"] <= 1
    assert step["reward"] == pytest.approx(step["rewards/has_answer/mean"] + 0.5 * step["rewards/short/mean"])
    # the grader that raises scored 0 on each of the step's G x P = 4 completions and counted them; the run went on
    assert step["rewards/broken/mean"] == 0 and step["rewards/broken/errors"] == 4
    assert step["rewards/has_answer/errors"] == 0 and step["rewards/short/errors"] == 0
