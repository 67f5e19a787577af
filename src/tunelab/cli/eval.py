"""`tunelab eval MODEL [MODEL ...] --data FILE`: evaluate and compare runs and models on one file.

MODEL: a run directory, a model alias, folder or hub id; `--base` adds each run's base, `--kb NAME`
adds a "+rag" variant of every model (retrieval from tunelab.rag, wired in here: rag sits above eval,
so eval's code receives the prompt rewrite as a function). Classify runs take a classification file.
A tools file (JSON lines whose records offer `tools`) is scored by the calls each model makes (eval/tool_calls).
Writes results.json, report.md and report.html to --out (default eval/), prints the table (or the
results as JSON with --json). Bad input is one line, exit 2 (the root command prints TunelabError).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from tunelab.cli.app import app
from tunelab.errors import TunelabError


def retrieval(kb, run_dir: str | None, k: int):
    """prompt turns -> the same turns with the last user turn replaced by `rag ask`'s prompt (the top `k`
    passages of the opened knowledge base `kb` for that turn, in the run's RAG prompt if it has one)."""
    from tunelab.rag.ask import build_messages, run_prompt
    from tunelab.rag.retrieve import query

    template = run_prompt(run_dir)

    def rewrite(turns: list[dict]) -> list[dict]:
        last = max(i for i, t in enumerate(turns) if t["role"] == "user")
        hits = query(kb, turns[last]["content"], k=k)
        return turns[:last] + build_messages(turns[last]["content"], hits, template) + turns[last + 1:]

    return rewrite


def _is_classify(name: str) -> bool:
    from tunelab.runs.kinds import run_task

    p = Path(name).expanduser()
    return p.is_dir() and run_task(p) == "classify"


@app.command("eval")
def eval_cmd(
    models: List[str] = typer.Argument(..., help="Runs (runs/<name>) and models (alias, folder, hub id) to compare."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Examples whose last assistant turn is the "
                                                                    "reference (a classification file for classify runs)."),
    columns: Optional[List[str]] = typer.Option(
        None, "--columns", help="Rename --data's fields first, as data.columns: prompt=question,completion=answer "
                                "(default: the runs' own data.columns, when the file has those fields)."),
    base: bool = typer.Option(False, "--base", help="Add each run's base model."),
    kb: Optional[str] = typer.Option(None, "--kb", help="Add a '+rag' variant of each model, retrieving from this KB."),
    kb_dir: Optional[Path] = typer.Option(None, "--kb-dir", help="Knowledge base folder (default $TUNELAB_HOME/kb/NAME)."),
    k: int = typer.Option(3, "-k", help="Passages retrieved per question (--kb)."),
    contains: Optional[str] = typer.Option(None, "--contains", help="Score replies containing this text."),
    regex: Optional[str] = typer.Option(None, "--regex", help="Score replies matching this regular expression."),
    metrics: Optional[List[str]] = typer.Option(
        None, "--metrics", help="nll perplexity exact contains regex keywords rouge_l chrf length "
                                "(repeatable or comma-separated; default all)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1,
                                                  help="Default: a run's eval.max_new_tokens (its report's), else 128."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    judge: Optional[str] = typer.Option(None, "--judge", help="OpenAI-compatible base URL of a judge (e.g. http://127.0.0.1:8000/v1)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The judge's model name."),
    out: Path = typer.Option(Path("eval"), "--out", "-o", help="Folder for results.json, report.md, report.html."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache", help="Result cache (default OUT/cache)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json instead of the table."),
    lm_eval: Optional[List[str]] = typer.Option(None, "--lm-eval", help="lm-evaluation-harness tasks (comma-separated) "
                                                                        "instead of --data; needs tunelab[lmeval]."),
    lm_eval_include: Optional[Path] = typer.Option(None, "--lm-eval-include", help="Folder of lm-eval task YAMLs."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="--lm-eval: at most N examples per task."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", min=0, help="--lm-eval: few-shot examples."),
) -> None:
    """Evaluate and compare models: reply NLL, generated-reply scores, an optional judge; HTML report."""
    from tunelab.eval.outputs import write_outputs
    from tunelab.eval.report_files import markdown

    log = (lambda s: None) if as_json else typer.echo
    if lm_eval:
        others = [n for n, v in (("--data", data), ("--kb", kb), ("--judge", judge), ("--contains", contains),
                                 ("--regex", regex), ("--metrics", metrics)) if v]
        if others:
            raise TunelabError(f"--lm-eval runs lm-eval's tasks alone, not with {others[0]}", where="--lm-eval",
                               hint="run the --data comparison in a separate command")
        return _lm_eval(models, base, lm_eval, lm_eval_include, limit, num_fewshot, batch_size, out, as_json, log)
    if data is None:
        raise TunelabError("give --data FILE (or --lm-eval TASKS)", where="--data")
    if not data.is_file():
        raise TunelabError(f"file not found: {data}", where="--data")
    from tunelab.eval import tool_calls

    if tool_calls.is_tools_file(data):
        results = _tool_calls(models, data, base, max_new_tokens, batch_size, log,
                              {"--columns": columns, "--kb": kb, "--judge": judge, "--contains": contains,
                               "--regex": regex, "--metrics": metrics})
    else:
        results = _by_replies(models, data, columns, base, kb, kb_dir, k, contains, regex, metrics, max_new_tokens,
                              batch_size, judge, judge_model, out, cache_dir, log)
    paths = write_outputs(results, out)
    if as_json:
        typer.echo(json.dumps(json.loads(paths["json"].read_text(encoding="utf-8")), indent=1, ensure_ascii=False))
        return
    typer.echo(markdown(results).split("\n\n", 1)[1].split("\n\nPer-example")[0])
    typer.echo(f"written: {paths['json']}, {paths['md']}, {paths['html']}")


def _tool_calls(models, data, base, max_new_tokens, batch_size, log, others: dict) -> dict:
    """A tools file (records with `tools`): each model's calls scored against the references' (eval/tool_calls)."""
    from tunelab.eval.compare import contenders_for
    from tunelab.eval.tool_calls import evaluate_tools, load_tool_items

    given = next((name for name, v in others.items() if v), None)
    if given:
        raise TunelabError(f"{given} does not apply to a tools file, which is scored by its tool calls", where=given,
                           hint="evaluate the tools file without it")
    if any(_is_classify(m) for m in models):
        raise TunelabError("a tools file evaluates generative runs and models, not classify runs", where="MODEL")
    items = load_tool_items(data)
    contenders = [c for m in models for c in contenders_for(m, base)]
    return evaluate_tools(contenders, items, max_new_tokens=max_new_tokens, batch_size=batch_size, data=str(data),
                          log=log)


def _by_replies(models, data, columns, base, kb, kb_dir, k, contains, regex, metrics, max_new_tokens, batch_size,
                judge, judge_model, out, cache_dir, log) -> dict:
    """Chat, prompt/completion or classification data: reply metrics, or classify runs' label metrics."""
    cols = eval_columns(columns, models, data, log)
    classify = [_is_classify(m) for m in models]
    if any(classify):
        if not all(classify):
            raise TunelabError("classify runs compare only with classify runs", where="MODEL",
                               hint="evaluate classify runs and generative models in separate commands")
        if kb or judge or base:
            raise TunelabError("--kb, --judge and --base apply to generative models, not classify runs", where="MODEL")
        from tunelab.eval.classify_compare import evaluate_classify
        from tunelab.runs.kinds import require_run

        for m in models:
            require_run(m, ("classify",), "eval", where="MODEL")
        return evaluate_classify(models, data, batch_size=batch_size, log=log)
    return _generative(models, data, base, kb, kb_dir, k, contains, regex, metrics, max_new_tokens,
                       batch_size, judge, judge_model, out, cache_dir, log, cols)


def parse_columns(given: list[str]) -> dict[str, str]:
    """`--columns prompt=question,completion=answer` (repeatable or comma-separated) as {ours: the file's}."""
    out = {}
    for part in (x.strip() for g in given for x in g.split(",")):
        ours, sep, theirs = part.partition("=")
        if not part:
            continue
        if not sep or not ours.strip() or not theirs.strip():
            raise TunelabError(f"--columns takes OURS=THEIRS pairs, got '{part}'", where="--columns",
                               hint="e.g. --columns prompt=question,completion=answer")
        out[ours.strip()] = theirs.strip()
    return out


def eval_columns(given: list[str] | None, models: list[str], data: Path, log) -> dict[str, str] | None:
    """The renames for --data: --columns when given; else the runs' own data.columns (all the runs among
    MODELS that have one must agree), used when the file's first record has every field they name."""
    if given:
        return parse_columns(given)
    from tunelab.data.sources import read_records
    from tunelab.runs.run import Run

    found = {}
    for m in models:
        p = Path(m).expanduser()
        if (p / "config.yaml").is_file():
            cols = (Run(p).raw.get("data") or {}).get("columns") or {}
            if cols:
                found[m] = dict(cols)
    if not found:
        return None
    first = next(iter(found.values()))
    if any(c != first for c in found.values()):
        raise TunelabError("the runs map the data's fields differently (data.columns)", where="--columns",
                           hint="say which applies to --data: --columns prompt=...,completion=...")
    records = read_records(data, "--data")
    if not all(theirs in records[0].data for theirs in first.values()):
        return None  # the file is not shaped as the runs' training data: read as it is
    log(f"--data read with the run's data.columns: {', '.join(f'{o}={t}' for o, t in first.items())}")
    return first


def _generative(models, data, base, kb, kb_dir, k, contains, regex, metrics, max_new_tokens, batch_size,
                judge, judge_model, out, cache_dir, log, columns=None) -> dict:
    from tunelab.eval import text_metrics
    from tunelab.eval.compare import Cache, contenders_for, default_cache_dir, evaluate, load_items

    asked = [x.strip() for m in metrics or [] for x in m.split(",") if x.strip()]
    chosen = text_metrics.select(asked, contains, regex)
    text_metrics.compile_regex(regex)
    contenders = [c for m in models for c in contenders_for(m, base)]
    items = load_items(data, columns)
    chosen = text_metrics.drop_keywords(chosen, asked, bool(items and items[0].keywords), str(data))
    if kb is not None:
        from tunelab.rag.retrieve import open_kb

        opened = open_kb(None if kb_dir else kb, directory=kb_dir)  # an unknown KB fails here, before any model loads
        contenders = [v for c in contenders
                      for v in (c, c.with_prompt(retrieval(opened, c.run_dir, k), f"rag:{kb_dir or kb}:{k}", "+rag"))]
    jd = None
    if judge is not None or judge_model is not None:
        if not (judge and judge_model):
            raise TunelabError("--judge needs --judge-model (and --judge-model needs --judge)", where="--judge")
        if len(contenders) < 2:
            raise TunelabError("the judge compares two models or more", where="--judge", hint="add a MODEL or --base")
        from tunelab.eval.judge import Judge

        jd = Judge(judge, judge_model)
        jd.check()  # before anything is generated
    cache = Cache(cache_dir or default_cache_dir(out))
    results = evaluate(contenders, items, chosen, contains=contains, regex=regex, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, cache=cache, judge=jd, data=str(data), log=log)
    log(f"cache: {cache.hits} hits, {cache.misses} misses ({cache.dir})")
    return results


def _lm_eval(models, base, tasks, include, limit, num_fewshot, batch_size, out, as_json, log) -> None:
    """`--lm-eval TASKS`: lm-eval's tasks on each run (adapter applied) / base / model -> OUT/lm_eval.json + .md."""
    from tunelab.eval import lm_eval_tasks
    from tunelab.eval.compare import contenders_for
    from tunelab.eval.report_files import write_atomic

    lm_eval_tasks.import_lm_eval()  # before anything else: absent is one line
    names = lm_eval_tasks.parse_tasks(tasks)
    if any(_is_classify(m) for m in models):
        raise TunelabError("--lm-eval evaluates generative runs and models, not classify runs", where="MODEL")
    contenders = [c for m in models for c in contenders_for(m, base)]
    results = lm_eval_tasks.run_tasks(contenders, names, include=str(include) if include else None, limit=limit,
                                      num_fewshot=num_fewshot, batch_size=min(batch_size, 64), log=log)
    text = json.dumps(results, indent=1, ensure_ascii=False)
    write_atomic(out / "lm_eval.json", text + "\n")
    table = lm_eval_tasks.markdown(results)
    write_atomic(out / "lm_eval.md", f"# lm-evaluation-harness ({results['lm_eval_version']})\n\n{table}\n")
    if as_json:
        typer.echo(text)
        return
    typer.echo(table)
    typer.echo(f"written: {out / 'lm_eval.json'}, {out / 'lm_eval.md'}")
