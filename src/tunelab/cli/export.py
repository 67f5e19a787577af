"""`tunelab export RUN --to gguf|ollama|hf|lora-gguf` and `tunelab push RUN owner/name`."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from tunelab.cli.main import app


def _size(n: int) -> str:
    """Binary units: GiB from 1 GiB up, MiB from 1 MiB up, else KiB."""
    if n >= 1024**3:
        return f"{n / 1024**3:,.2f} GiB"
    return f"{n / 1024**2:,.1f} MiB" if n >= 1024**2 else f"{n / 1024:,.1f} KiB"


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    to: str = typer.Option(..., "--to", help="gguf | ollama (a GGUF + Modelfile) | hf (merged transformers "
                                             "folder) | lora-gguf (the adapter alone, for llama.cpp --lora)."),
    quant: str = typer.Option(None, "--quant", help="gguf/ollama: f16 (default) | bf16 | q8_0 | q4_0 | f32; "
                                                    "hf: f32 (default, the exact merge) | bf16 | f16."),
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
    if res.template_format:
        c.print(f"Modelfile TEMPLATE: the run's {escape(res.template_format)} format, checked on {res.checked} "
                f"conversations read back as Ollama reads them")
    if check:
        c.print(escape(res.modelfile or ""), end="")
        return
    if res.merge is not None:
        c.print(f"{res.merge.method} run merged: {res.merge.params:,} params in {res.merge.dtype}")
    if res.gguf is not None:
        g = res.gguf
        fb = f", {len(g.f16_fallback)} tensors kept in f16" if getattr(g, "f16_fallback", ()) else ""
        c.print(f"GGUF {g.quant} ({g.arch}): {g.tensors} tensors{fb}")
    total = sum(n for _, n in res.files)
    n_files = f"{len(res.files)} file" + ("s" if len(res.files) != 1 else "")
    c.print(f"wrote [bold]{escape(str(res.out))}[/bold] ({n_files}, {_size(total)}):")
    for p, n in res.files:
        c.print(f"  {escape(str(p.relative_to(res.out)))}  {_size(n)}")
    for note in res.notes:
        c.print(f"[yellow]note[/yellow]: {escape(note)}")
    if res.to == "ollama":
        c.print(f"next: [bold]ollama create {res.ollama_name} -f {escape(shlex.quote(str(res.out / 'Modelfile')))}"
                f"[/bold] && ollama run {res.ollama_name}")
    elif res.to == "lora-gguf":
        c.print("use: llama-cli -m BASE.gguf --lora " + escape(shlex.quote(str(res.gguf.path)))
                + " (BASE.gguf: the run's base model as GGUF, unquantized or q8_0)")
    elif res.to == "gguf":
        c.print("use: llama-cli -m " + escape(shlex.quote(str(res.gguf.path))) + " -cnv")


@app.command("push")
def push_cmd(
    run: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    repo: str = typer.Argument(..., help="The Hugging Face model repo, owner/name (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    what: str = typer.Option("adapter", "--what", help="adapter (as trained, PEFT) | merged (a transformers "
                                                       "model) | gguf (one .gguf file)."),
    quant: str = typer.Option(None, "--quant", help="merged: f32 (default) | bf16 | f16; gguf: f16 (default) | "
                                                    "bf16 | q8_0 | q4_0 | f32."),
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
