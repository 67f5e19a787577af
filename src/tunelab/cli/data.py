"""`tunelab data inspect CONFIG`: what the trainer will see, before training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Inspect datasets as the trainer will see them.", no_args_is_help=True)


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
    t = Table(title=f"data (template: {rep.template.name}, max_length {cfg.data.max_length})")
    for col in ("split", "examples", "mean tokens", "max", "truncated", "tokens cut", "no reply left", "learned tokens"):
        t.add_column(col)
    for s in rep.splits:
        t.add_row(s.name, str(s.count), f"{s.mean:.0f}", str(max(s.lengths)), str(s.truncated), str(s.tokens_cut),
                  str(s.no_target), f"{s.learned_tokens:,}")
    c.print(t)
    c.print("[bold]train token lengths[/bold]")
    for line in histogram(rep.splits[0].lengths):
        c.print(line, highlight=False)
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/yellow] {w}")
    for i, ex in enumerate(rep.examples[:n]):
        c.print(f"\n[bold]example {i + 1}[/bold] ({ex.where}) - [green]green = learned[/green], [dim]dim = masked[/dim]")
        c.print(render_example(ex, tok))
    if plot:
        c.print(f"histogram written to {plot_histogram(rep, plot)}")
