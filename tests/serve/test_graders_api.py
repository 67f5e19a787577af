"""`/v1/fine_tuning/alpha/graders/run` and `/validate` through the official `openai` client, on a real
server (uvicorn, the tiny Llama as the judge model): rewards and metadata in OpenAI's shapes, multi's
sub_rewards, a python grader's error flag, a score_model judge served by this server itself, cosine on the
server's MiniLM (the same vectors as train/graders' own embedder), and 400s naming the bad field."""

from __future__ import annotations

import numpy as np
import openai
import pytest

OUT = "{{sample.output_text}}"
EXACT = {"type": "string_check", "name": "exact", "input": OUT, "reference": "{{item.answer}}", "operation": "eq"}


@pytest.fixture(scope="module")
def graders_server(tmp_path_factory, tiny_model_dir, server_factory):
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("graders")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), auth=True)
    key = create_key(state.db_path, "alice")[1]
    with server_factory(state, keys={"alice": key}) as srv:
        yield srv, srv.client(key).fine_tuning.alpha.graders


def test_run_string_check_and_multi(graders_server):
    _, graders = graders_server
    r = graders.run(grader=EXACT, model_sample="81", item={"answer": "81"})
    assert r.reward == 1.0 and r.metadata.name == "exact" and r.metadata.type == "string_check"
    assert r.metadata.scores == {"exact": 1.0} and r.sub_rewards == {} and r.metadata.execution_time >= 0
    assert not any(v for k, v in r.metadata.errors.to_dict().items() if isinstance(v, bool))
    multi = {"type": "multi", "name": "m", "calculate_output": "0.7 * exact + 0.3 * fuzzy",
             "graders": {"exact": EXACT, "fuzzy": {"type": "text_similarity", "name": "f", "input": OUT,
                                                   "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}}}
    r = graders.run(grader=multi, model_sample="kitten", item={"answer": "sitting"})
    assert r.reward == pytest.approx(0.3 * 8 / 13) and r.sub_rewards == {"exact": 0.0, "fuzzy": pytest.approx(8 / 13)}


def test_run_python_grader_error_is_flagged_not_raised(graders_server):
    _, graders = graders_server
    src = "def grade(sample, item):\n    return float(sample['output_json']['n']) / item['d']\n"
    g = {"type": "python", "name": "py", "source": src}
    assert graders.run(grader=g, model_sample='{"n": 3}', item={"d": 4}).reward == 0.75
    r = graders.run(grader=g, model_sample='{"n": 3}', item={"d": 0})
    assert r.reward == 0.0 and r.metadata.errors.python_grader_runtime_error
    assert "ZeroDivisionError" in r.metadata.errors.python_grader_runtime_error_details


def test_score_model_judged_by_this_server(graders_server, monkeypatch):
    srv, graders = graders_server
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the judge is the server the request came to
    g = {"type": "score_model", "name": "judge", "model": srv.state.base, "range": [0, 10],
         "sampling_params": {"max_completions_tokens": 4, "temperature": 0},
         "input": [{"role": "system", "content": "Rate the answer from 0 to 10."},
                   {"role": "user", "content": "Q: {{item.q}} A: " + OUT}]}
    r = graders.run(grader=g, model_sample="4", item={"q": "2+2"})
    errors = r.metadata.errors
    assert not errors.model_grader_server_error, errors.model_grader_server_error_details
    usage = r.model_grader_token_usage_per_model[srv.state.base]
    assert usage["completion_tokens"] >= 1 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert r.metadata.token_usage == usage["total_tokens"]
    # the tiny model's reply is random text: a score in range, or a parse error scoring 0
    assert (0 <= r.reward <= 10 and not errors.model_grader_parse_error) or (r.reward == 0 and errors.model_grader_parse_error)


def test_cosine_on_the_servers_embedder(graders_server):
    from tunelab.rag.embed import Embedder
    from tunelab.train.graders import embedding

    _, graders = graders_server
    g = {"type": "text_similarity", "name": "cos", "input": OUT, "reference": "{{item.ref}}",
         "evaluation_metric": "cosine"}
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply today."]
    near = graders.run(grader=g, model_sample=texts[0], item={"ref": texts[1]}).reward
    far = graders.run(grader=g, model_sample=texts[0], item={"ref": texts[2]}).reward
    ours, rags = embedding.encode(texts), Embedder.load("minilm-l6").encode(texts)
    np.testing.assert_allclose(ours, rags, atol=1e-5)  # training's embedder = the server's
    assert near == pytest.approx(float(rags[0] @ rags[1]), abs=1e-5)
    assert far == pytest.approx(float(rags[0] @ rags[2]), abs=1e-5) and near > far


def test_validate_returns_the_grader(graders_server):
    _, graders = graders_server
    assert graders.validate(grader=EXACT).grader.to_dict() == EXACT


@pytest.mark.parametrize("call, kwargs, message", [
    ("validate", {"grader": {**EXACT, "colour": "red"}}, r"unknown field\(s\) colour"),
    ("run", {"grader": {**EXACT, "colour": "red"}, "model_sample": "x"}, r"unknown field\(s\) colour"),
    ("run", {"grader": {"type": "label_model", "name": "l"}, "model_sample": "x"}, "label_model"),
    ("run", {"grader": {**EXACT, "reference": "{{itm.answer}}"}, "model_sample": "x"}, "unknown template variable"),
    ("run", {"grader": {"type": "text_similarity", "name": "t", "input": OUT, "reference": "x",
                        "evaluation_metric": "meteor"}, "model_sample": "x"}, "meteor is not supported"),
    ("run", {"grader": EXACT, "model_sample": "x", "item": [1]}, "'item' must be an object"),
    ("run", {"grader": EXACT, "model_sample": "x", "extra_body": {"reference_answer": "x"}},
     r"unknown parameter\(s\): reference_answer"),
    ("run", {"grader": "exact", "model_sample": "x"}, "'grader' must be a grader object"),
    ("run", {"grader": {**EXACT, "type": ["x"]}, "model_sample": "x"}, "type must be one of"),
])
def test_bad_graders_are_400_naming_the_field(graders_server, call, kwargs, message):
    _, graders = graders_server
    with pytest.raises(openai.BadRequestError, match=message) as e:
        getattr(graders, call)(**kwargs)
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"
