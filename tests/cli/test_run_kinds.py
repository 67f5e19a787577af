"""Commands that read a run check its kind first (runs/rundir.py: run_task, require_run, run_or_model,
refuse_run) and say in one line what they need; save_weights puts the tokenizer, with the trained chat
template, beside the weights."""

import subprocess
import sys

import pytest

from tunelab.errors import TunelabError
from tunelab.runs.rundir import RunDir
from tunelab.runs.kinds import refuse_run, require_run, run_or_model, run_task


def make_run(root, name, task="sft", done=True):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(("" if task is None else f"task: {task}\n") + "model: {name: tiny-llama}\n")
    if done:
        (d / "DONE").write_text("x\n")
    return d


def cli(*args):
    """In-process `tunelab ARGS` -> (exit code, stdout, stderr)."""
    import contextlib
    import io

    from tunelab.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        run(list(args))
    return e.value.code, out.getvalue(), err.getvalue()


def one_line_error(code, err, *fragments):
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def test_run_task_names_the_task_or_none(tmp_path):
    assert run_task(make_run(tmp_path, "a", "classify")) == "classify"
    assert run_task(make_run(tmp_path, "b", None)) == "sft"  # configs without `task` are sft runs
    assert run_task(tmp_path) is None
    assert run_task(tmp_path / "missing") is None


def test_require_run_checks_existence_kind_and_done(tmp_path):
    sft = make_run(tmp_path, "s")
    rd, cfg = require_run(sft, ("sft", "dpo"), "generate")
    assert isinstance(rd, RunDir) and rd.path == sft and cfg["task"] == "sft"
    with pytest.raises(TunelabError, match="no such run directory") as e:
        require_run(tmp_path / "typo", ("sft",), "generate")
    assert "runs in" in e.value.hint and "s" in e.value.hint  # the runs that are there
    with pytest.raises(TunelabError, match=r"is not a tunelab run directory \(no config.yaml\)"):
        require_run(tmp_path, ("sft",), "generate")
    clf = make_run(tmp_path, "c", "classify")
    with pytest.raises(TunelabError, match="is a classify run; generate needs an sft, pretrain, dpo or grpo run") as e:
        require_run(clf, ("sft", "pretrain", "dpo", "grpo"), "generate")
    assert e.value.hint == f"use `tunelab predict {clf}`"
    with pytest.raises(TunelabError, match="predict needs a classify run") as e:
        require_run(sft, ("classify",), "predict")
    assert "tunelab generate" in e.value.hint
    with pytest.raises(TunelabError, match="is incomplete"):
        require_run(make_run(tmp_path, "i", done=False), ("sft",), "generate")
    with pytest.raises(TunelabError, match="is a classify run"):  # the kind is reported before DONE
        require_run(make_run(tmp_path, "ci", "classify", done=False), ("sft",), "generate")


def test_run_or_model_tells_runs_models_and_neither_apart(tmp_path):
    sft = make_run(tmp_path, "s")
    assert run_or_model(str(sft), ("sft",), "generate")[0].path == sft
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert run_or_model(str(model), ("sft",), "generate") is None
    (model / "DONE").write_text("x")  # converted model caches carry a DONE marker too: still a model
    assert run_or_model(str(model), ("sft",), "generate") is None
    assert run_or_model("smollm2-135m-instruct", ("sft",), "generate") is None  # alias
    assert run_or_model("HuggingFaceTB/SmolLM2-135M", ("sft",), "generate") is None  # hub id
    with pytest.raises(TunelabError, match="is not a run directory .* nor a model folder"):
        run_or_model(str(tmp_path / "m" / ".."), ("sft",), "generate")
    with pytest.raises(TunelabError, match="no such run or model"):
        run_or_model(str(tmp_path / "typo"), ("sft",), "generate")
    with pytest.raises(TunelabError, match="no such run or model"):
        run_or_model("runs/surely-not-a-run-here", ("sft",), "generate")


def test_refuse_run_for_commands_that_take_a_model(tmp_path):
    refuse_run("tiny-llama", "quantize")
    with pytest.raises(TunelabError, match="is an sft run directory; quantize takes a model") as e:
        refuse_run(make_run(tmp_path, "s"), "quantize")
    assert "tiny-llama" in e.value.hint and "tunelab merge" in e.value.hint


@pytest.mark.parametrize("cmd", [["generate", "{run}", "-p", "hi"], ["chat", "{run}"], ["merge", "{run}", "--out", "x"]])
def test_generative_commands_refuse_a_classify_run(tmp_path, cmd):
    clf = make_run(tmp_path / "runs", "c", "classify")
    code, _, err = cli(*[a.format(run=clf) for a in cmd])
    one_line_error(code, err, f"{clf} is a classify run; {cmd[0]} needs an sft, pretrain, dpo or grpo run",
                   f"use `tunelab predict {clf}`")


def test_predict_refuses_other_runs_and_folders(tmp_path):
    sft = make_run(tmp_path, "s")
    one_line_error(*cli("predict", str(sft), "-t", "hi")[::2], "predict needs a classify run", "tunelab generate")
    one_line_error(*cli("predict", str(tmp_path), "-t", "hi")[::2], "is not a tunelab run directory (no config.yaml)")
    one_line_error(*cli("predict", str(make_run(tmp_path, "c", "classify", done=False)), "-t", "x")[::2],
                   "is incomplete")


def test_model_commands_refuse_a_run(tmp_path):
    sft = str(make_run(tmp_path, "s"))
    one_line_error(*cli("quantize", sft, "--format", "nf4", "--out", str(tmp_path / "q"))[::2],
                   "quantize takes a model", "tiny-llama")
    one_line_error(*cli("memory", sft)[::2], "memory takes a model")
    one_line_error(*cli("rag", "ask", "kb", "q", "--run", str(make_run(tmp_path, "c", "classify")))[::2],
                   "--run:", "rag ask needs an sft, pretrain, dpo or grpo run")


def test_generate_on_a_classify_run_or_a_plain_folder_is_one_line_through_the_real_cli(tmp_path):
    """The console script (subprocess): no traceback, exit 2 - before anything loads."""
    clf = make_run(tmp_path / "runs", "c", "classify")
    (tmp_path / "plain").mkdir()
    for target, fragment in ((clf, "is a classify run; generate needs"),
                             (tmp_path / "plain", "is not a run directory (no config.yaml)")):
        r = subprocess.run([sys.executable, "-m", "tunelab", "generate", str(target), "-p", "hi"],
                           capture_output=True, text=True, timeout=120)
        one_line_error(r.returncode, r.stderr, fragment)


def test_generate_base_needs_a_run():
    one_line_error(*cli("generate", "tiny-llama", "--base", "-p", "hi")[::2], "--base:", "is a model, not a run")


def test_generator_from_run_refuses_a_classify_run_from_python(tmp_path):
    from tunelab.infer.generate import Generator

    with pytest.raises(TunelabError, match="is a classify run; generation needs an sft, pretrain, dpo or grpo run"):
        Generator.from_run(make_run(tmp_path, "c", "classify"))


# ---- save_weights: the tokenizer with the trained chat template beside the weights -------------------------------
CONV = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_save_weights_writes_the_tokenizer_with_the_runs_chat_template(tmp_path, tiny_lora, tiny_model_dir, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.templates import build_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    own = tok.chat_template
    template = build_template("llama2", tok, system="Be brief.")  # not the tokenizer's own (ChatML)
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    template.save(rd.path / "template.json")
    model = tiny_lora() if method == "lora" else AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rd.save_weights(model, method, tok)
    out = rd.path / ("adapter" if method == "lora" else "model")
    assert (out / ("adapter_config.json" if method == "lora" else "config.json")).exists()
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.apply_chat_template(CONV, tokenize=False) == "".join(t for t, _ in template.segments(CONV))
    assert saved.apply_chat_template(CONV[:1], tokenize=False, add_generation_prompt=True) == \
        template.prompt_text(CONV[:1])
    assert tok.chat_template == own  # the caller's tokenizer is left as it was
