"""`tunelab data inspect CONFIG`: what the trainer will see, before training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Inspect datasets as the trainer will see them.", no_args_is_help=True)


def endpoint_key(model: str | None, api_key_env: str) -> str | None:
    """The API key for a `--base-url` teacher, from `api_key_env` (OPENAI_API_KEY may be unset: a local
    server needs none); one-line errors for a missing --model or a named variable that is not set."""
    import os

    from tunelab.errors import TunelabError

    if not model:
        raise TunelabError("--base-url needs --model", where="--model", hint="the model name the server serves")
    key = os.environ.get(api_key_env)
    if key is None and api_key_env != "OPENAI_API_KEY":
        raise TunelabError(f"environment variable {api_key_env} is not set", where="--api-key-env")
    return key


@app.command("inspect")
def inspect_cmd(
    config: Path = typer.Argument(..., help="YAML run config."),
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides"),
    n: int = typer.Option(2, "--examples", "-n", help="Rendered examples to show."),
    plot: Path = typer.Option(None, "--plot", help="Write the length histogram PNG here."),
) -> None:
    """Counts per split, token-length histogram, truncation, and examples with learned tokens in green."""
    from tunelab.config import load_config
    from tunelab.data.inspect import histogram, inspect_config, plot_histogram, render_example
    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve

    cfg = load_config(config, overrides or [])
    tok = load_tokenizer(resolve(cfg.model.name))
    rep = inspect_config(cfg, tok)
    c = Console()
    _print_splits(c, rep, cfg)
    for line in rep.notes:
        c.print(line, highlight=False)
    c.print(f"[bold]train token lengths{' (prompt + longer reply)' if cfg.task in ('reward', 'dpo') else ''}[/bold]")
    for line in histogram(rep.splits[0].lengths):
        c.print(line, highlight=False)
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/yellow] {w}")
    for i, ex in enumerate(rep.examples[:n]):
        c.print(f"\n[bold]example {i + 1}[/bold] ({ex.where}) - [green]green = learned[/green], [dim]dim = masked[/dim]")
        c.print(render_example(ex, tok))
    if plot:
        c.print(f"histogram written to {plot_histogram(rep, plot)}")


def _print_splits(c: Console, rep, cfg) -> None:
    """One row per split; the columns depend on the task."""
    L = cfg.data.max_length
    if rep.task == "sft":
        title = f"data (template: {rep.template.name}, max_length {L})"
        cols = ("split", "examples", "mean tokens", "max", "truncated", "tokens cut", "no reply left", "learned tokens")
        rows = [(s.name, str(s.count), f"{s.mean:.0f}", str(max(s.lengths)), str(s.truncated), str(s.tokens_cut),
                 str(s.no_target), f"{s.learned_tokens:,}") for s in rep.splits]
    elif rep.task == "pretrain":
        title = f"pretraining text (packed into blocks of {L} tokens)"
        cols = ("split", "documents", "mean tokens", "max", "tokens", f"blocks of {L}")
        rows = [(s.name, str(s.count), f"{s.mean:.0f}", str(max(s.lengths)), f"{s.learned_tokens:,}",
                 f"{s.learned_tokens // L:,}") for s in rep.splits]
    elif rep.task == "classify":
        labels = sorted(set().union(*(s.labels for s in rep.splits)))
        title = f"classification ({len(labels)} labels, max_length {L})"
        cols = ("split", "examples", "mean tokens", "max", "truncated", *labels)
        rows = [(s.name, str(s.count), f"{s.mean:.0f}", str(max(s.lengths)), str(s.truncated),
                 *(str(s.labels.get(x, 0)) for x in labels)) for s in rep.splits]
    else:
        title = f"preference pairs (template: {rep.template.name}, max_length {L})"
        cols = ("split", "pairs", "mean prompt", "mean chosen", "mean rejected", "max", "truncated")
        rows = [(s.name, str(s.count), *(f"{x:.0f}" for x in s.pair_means), str(max(s.lengths)), str(s.truncated))
                for s in rep.splits]
    t = Table(title=title)
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    c.print(t)


@app.command("synth")
def synth_cmd(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Items: .jsonl (id optional) or .txt (one a line)."),
    mode: str = typer.Option("reverse", "--mode", help="reverse (output -> instruction) | respond | augment."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl of training pairs (resumed if it exists)."),
    teacher: str = typer.Option(None, "--teacher", help="Local teacher: model alias, folder or run directory."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1."),
    model: str = typer.Option(None, "--model", help="Model name sent to --base-url."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Env var holding the API key."),
    prompt: str = typer.Option(None, "--prompt", help="Teacher prompt template containing {input}."),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="Read the prompt template from a file."),
    system: str = typer.Option(None, "--system", help="System message for the teacher."),
    field: str = typer.Option(None, "--field", help="JSONL field holding the item text."),
    out_format: str = typer.Option("messages", "--format", help="messages | prompt_completion."),
    concurrency: int = typer.Option(4, "--concurrency", "-j", help="Requests in flight (remote teacher)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generate call (local teacher)."),
    max_items: int = typer.Option(0, "--max-items", help="Only the first N items (0 = all)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest teacher reply, in tokens."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request (remote teacher)."),
    max_attempts: int = typer.Option(5, "--max-attempts", help="Attempts per item before it is recorded as failed."),
    backoff: float = typer.Option(0.5, "--backoff", help="First retry wait in seconds (doubles each retry)."),
    max_backoff: float = typer.Option(30.0, "--max-backoff", help="Longest retry wait in seconds."),
    min_chars: int = typer.Option(3, "--min-chars", help="Drop generated texts shorter than this."),
    max_chars: int = typer.Option(0, "--max-chars", help="Drop generated texts longer than this (0 = no limit)."),
    refusal: list[str] = typer.Option(None, "--refusal", help="Refusal phrase (repeatable; replaces the defaults)."),
    no_refusal_filter: bool = typer.Option(False, "--no-refusal-filter", help="Keep replies that look like refusals."),
    price_in: float = typer.Option(0.0, "--price-per-1k-in", help="Price per 1,000 prompt tokens."),
    price_out: float = typer.Option(0.0, "--price-per-1k-out", help="Price per 1,000 completion tokens."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Make training pairs with a teacher model; safe to kill and rerun (finished items are skipped)."""
    from tunelab.synth import DEFAULT_REFUSALS, Filters, LocalTeacher, OpenAITeacher, SynthOptions, run_synth
    from tunelab.synth.items import MODES
    from tunelab.errors import TunelabError

    if mode not in MODES:
        raise TunelabError(f"unknown mode '{mode}'", where="--mode", hint=f"use one of {', '.join(MODES)}")
    if out_format not in ("messages", "prompt_completion"):
        raise TunelabError(f"unknown format '{out_format}'", where="--format", hint="use messages or prompt_completion")
    if (teacher is None) == (base_url is None):
        raise TunelabError("give exactly one teacher", where="--teacher/--base-url",
                           hint="--teacher smollm2-135m-instruct (local) or --base-url URL --model NAME (remote)")
    if min(concurrency, batch_size, max_attempts, max_new_tokens) < 1 or max_items < 0 or timeout <= 0:
        raise TunelabError("--concurrency, --batch-size, --max-attempts and --max-new-tokens must be >= 1, "
                           "--timeout > 0, --max-items >= 0", where="options")
    if prompt is not None and prompt_file is not None:
        raise TunelabError("give --prompt or --prompt-file, not both", where="--prompt-file")
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise TunelabError(f"file not found: {prompt_file}", where="--prompt-file")
        prompt = prompt_file.read_text(encoding="utf-8")
    refusals = () if no_refusal_filter else tuple(refusal) if refusal else DEFAULT_REFUSALS
    opts = SynthOptions(mode=mode, prompt=prompt, system=system, text_field=field, out_format=out_format,
                        concurrency=concurrency, max_items=max_items,
                        filters=Filters(min_chars=min_chars, max_chars=max_chars, refusals=refusals),
                        price_in=price_in, price_out=price_out, overwrite=overwrite)
    opts.template  # noqa: B018 - validates {input} before a model is loaded
    if base_url is not None:
        key = endpoint_key(model, api_key_env)
        t = OpenAITeacher(base_url, model, key, timeout=timeout, max_attempts=max_attempts, backoff=backoff,
                          max_backoff=max_backoff, max_tokens=max_new_tokens, temperature=temperature)
    else:
        from tunelab.synth.items import read_items
        from tunelab.runs.kinds import GENERATIVE_TASKS, run_or_model

        run_or_model(teacher, GENERATIVE_TASKS, "data synth", where="--teacher")  # a run must be a finished LM
        read_items(input_path, mode, field)  # bad input fails before the model loads
        t = LocalTeacher.load(teacher, max_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size)

    c = Console()
    if quiet:
        stats = run_synth(input_path, out, t, opts)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=c, transient=False) as bar:
            task = bar.add_task("synth", total=None, info="")

            def on_item(s, total):
                bar.update(task, total=total, completed=s.processed,
                           info=f"kept {s.kept} · dropped {sum(s.filtered.values())} · failed {s.failed} · "
                                f"{s.prompt_tokens + s.completion_tokens:,} tok")

            stats = run_synth(input_path, out, t, opts, progress=on_item)
    for line in stats.summary_lines(out):
        c.print(line, highlight=False)
    if stats.failed:
        from tunelab.synth.store import side_path

        c.print(f"[yellow]{stats.failed} items failed[/yellow] (see {side_path(out, 'failed')}); "
                "run the same command again to retry them", highlight=False)

