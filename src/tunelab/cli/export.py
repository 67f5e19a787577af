"""`tunelab export RUN --to TARGET` and `tunelab push RUN owner/name`.

The targets, their quants and default quants, and push's --what choices come from the export target
registry (`tunelab.export.targets.REGISTRY`): what is printed comes from the target's result.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from tunelab.cli.app import app
from tunelab.export.targets import REGISTRY, push_targets


def _size(n: int) -> str:
    """Binary units: GiB from 1 GiB up, MiB from 1 MiB up, else KiB."""
    if n >= 1024**3:
        return f"{n / 1024**3:,.2f} GiB"
    return f"{n / 1024**2:,.1f} MiB" if n >= 1024**2 else f"{n / 1024:,.1f} KiB"


def _quants(t) -> str:
    """"f16 (default) | f32 | bf16 | ...": a target's quants, its default first."""
    rest = [q for q in t.quants if q != t.default_quant]
    return " | ".join([f"{t.default_quant} (default)", *rest])


TO_HELP = " | ".join(f"{t.name} ({t.about})" for t in REGISTRY.values())
QUANT_HELP = "; ".join(f"{t.name}: {_quants(t)}" for t in REGISTRY.values())
WHAT_HELP = "adapter (as trained, PEFT) | " + " | ".join(f"{w} ({t.about})" for w, t in push_targets().items())
PUSH_QUANT_HELP = "; ".join(f"{w}: {_quants(t)}" for w, t in push_targets().items())


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    to: str = typer.Option(..., "--to", help=TO_HELP + "."),
    quant: str = typer.Option(None, "--quant", help=QUANT_HELP + "."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write (default: RUN/export/<to>-<quant>, "
                                                       "RUN/export/lora-gguf)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    temperature: float = typer.Option(0.0, "--temperature", help="ollama: PARAMETER temperature (0 = greedy, "
                                                                 "as tunelab generate)."),
    check: bool = typer.Option(False, "--check", help="ollama: only build the Modelfile and check that its "
                                                      "TEMPLATE renders chats as the run was trained; write nothing."),
) -> None:
    """Export a finished run for llama.cpp, Ollama or transformers. Written into a temporary folder and
    renamed when complete; for ollama, prints the `ollama create` command to run."""
    from tunelab.export.bundle import export_run

    c = Console(highlight=False, soft_wrap=True)
    res = export_run(run, to, quant, out, overwrite=overwrite, temperature=temperature, check_only=check)
    for line in res.summary():  # the target's own lines (export/targets/<target>.py)
        c.print(escape(line))
    if check:
        c.print(escape(res.checked_text()), end="")
        return
    total = sum(n for _, n in res.files)
    n_files = f"{len(res.files)} file" + ("s" if len(res.files) != 1 else "")
    c.print(f"wrote [bold]{escape(str(res.out))}[/bold] ({n_files}, {_size(total)}):")
    for p, n in res.files:
        c.print(f"  {escape(str(p.relative_to(res.out)))}  {_size(n)}")
    for note in res.notes:
        c.print(f"[yellow]note[/yellow]: {escape(note)}")
    for line in res.usage():
        c.print(escape(line))


@app.command("push")
def push_cmd(
    run: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    repo: str = typer.Argument(..., help="The Hugging Face model repo, owner/name (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    what: str = typer.Option("adapter", "--what", help=WHAT_HELP + "."),
    quant: str = typer.Option(None, "--quant", help=PUSH_QUANT_HELP + "."),
) -> None:
    """Upload a run to the Hugging Face Hub with a model card (base, method, data, validation loss).
    Token: HF_TOKEN, or the one `hf auth login` saved. Fails in one line when offline or unreachable."""
    from tunelab.export.hub import push_run

    c = Console(highlight=False, soft_wrap=True)
    res = push_run(run, repo, what=what, private=private, quant=quant)
    total = sum(n for _, n in res.files)
    c.print(f"pushed {res.what} of {escape(str(run))} to [bold]{escape(res.url)}[/bold]"
            f"{' (private)' if res.private else ''}: {len(res.files)} files, {_size(total)}")
    for p, n in res.files:
        c.print(f"  {escape(p)}  {_size(n)}")
