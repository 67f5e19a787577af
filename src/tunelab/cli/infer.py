"""`tunelab generate RUN --prompt ...` and `tunelab chat RUN`: inference with the run's own template."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from tunelab.cli.app import app


WEIGHTS_HELP = ("The decode engine's weights: auto (int4 where it is exact and the CPU does bf16, else the "
                "model's dtype: `tunelab doctor` says which) | fp32 (transformers' exact tokens) | bf16 | int4 "
                "(the exact 4-bit codes of a model converted from a Q4/Q8 GGUF, LoRA kept apart) | int8 (fbgemm, "
                "loses quality): docs/inference.md.")
ENGINE_HELP = "auto (tunelab's decode engine when it runs the model) | engine | hf (transformers' generate)."


def _generator(run: str, base: bool, command: str, engine: str = "auto", weights: str = "auto"):
    """The Generator of a finished sft/pretrain/dpo run, or of a model (alias, folder, .gguf, hub id);
    TunelabError, before anything loads, for anything else (rundir.run_or_model)."""
    from tunelab.errors import TunelabError
    from tunelab.infer.generate import Generator
    from tunelab.runs.kinds import GENERATIVE_TASKS, run_or_model

    from tunelab.infer.engine_choice import WEIGHTS

    kw = dict(engine=engine, weights=weights)
    if engine not in ("auto", "engine", "hf"):
        raise TunelabError(f"unknown engine '{engine}'", where="--engine", hint="auto, engine or hf")
    if weights not in WEIGHTS:
        raise TunelabError(f"unknown weights '{weights}'", where="--weights", hint=", ".join(WEIGHTS))
    if weights != "auto" and engine == "hf":
        raise TunelabError(f"--weights {weights} is for tunelab's engine, not transformers' generate",
                           where="--weights", hint="drop --engine hf, or drop --weights")
    if run_or_model(run, GENERATIVE_TASKS, command) is not None:
        return Generator.from_run(run, base=base, **kw)
    if base:
        raise TunelabError(f"{run} is a model, not a run: it has no adapter to leave out", where="--base",
                           hint="drop --base, or pass runs/<name>")
    return Generator.from_model(run, **kw)  # a model name: alias, folder, .gguf, hub id


@app.command("generate")
def generate_cmd(
    run: str = typer.Argument(..., help="A run directory (runs/<name>) or a model name."),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="A user message (repeatable)."),
    prompts: Path = typer.Option(None, "--prompts", help="File of prompts (.txt one a line, or .jsonl)."),
    base: bool = typer.Option(False, "--base", help="Use the run's base model without the adapter."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (same seed, same reply)."),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
    weights: str = typer.Option("auto", "--weights", help=WEIGHTS_HELP),
) -> None:
    """Generate replies for one or more prompts, using the template the run was trained with."""
    from tunelab.errors import TunelabError
    from tunelab.infer.generate import read_prompts

    items = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    if not items:
        raise TunelabError("no prompt given", where="--prompt", hint='pass --prompt "..." or --prompts FILE')
    gen = _generator(run, base, "generate", engine, weights)
    for p in items:
        reply = gen.reply([{"role": "user", "content": p}], max_new_tokens=max_new_tokens, temperature=temperature,
                          seed=seed)
        if len(items) > 1:
            print(f"### {p}")
        print(reply)


@app.command("chat")
def chat_cmd(
    run: str = typer.Argument(..., help="A run directory (runs/<name>) or a model name."),
    base: bool = typer.Option(False, "--base", help="Use the run's base model without the adapter."),
    system: str = typer.Option(None, "--system", help="System message for this chat."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
    weights: str = typer.Option("auto", "--weights", help=WEIGHTS_HELP),
) -> None:
    """Multi-turn chat with streaming. /reset clears the history, /quit leaves."""
    from tunelab.errors import TunelabError

    console = Console()
    gen = _generator(run, base, "chat", engine, weights)
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    console.print("[dim]chat: /reset clears the history, /quit (or Ctrl-D) leaves[/dim]")
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        cmd = line.strip()
        if cmd in ("/quit", "/exit"):
            break
        if cmd == "/reset":
            history = history[:1] if system else []
            console.print("[dim]history cleared[/dim]")
            continue
        if not cmd:
            continue
        history.append({"role": "user", "content": line})
        sys.stdout.write("bot> ")
        reply = ""
        try:
            for piece in gen.stream(history, max_new_tokens=max_new_tokens, temperature=temperature):
                reply += piece
                sys.stdout.write(piece)
                sys.stdout.flush()
        except TunelabError as e:  # e.g. the history outgrew the context: say so, keep the chat
            sys.stdout.write("\n")
            console.print(f"[red]error[/red]: {e.one_line()}")
            history.pop()
            continue
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": reply.strip()})
