"""`tunelab models`: the aliases tunelab can obtain, and whether each is available offline."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tunelab.cli.app import app
from tunelab.models.registry import ALIASES, model_cache_dir, package_dir


@app.command("models")
def models_cmd() -> None:
    """List model aliases, where each comes from, and whether it is ready offline."""
    table = Table(title="tunelab models")
    table.add_column("alias", no_wrap=True, min_width=max(len(a.name) for a in ALIASES.values()))  # what you type
    for col in ("task", "params", "offline source", "status", "hub id"):
        table.add_column(col, overflow="fold")
    for a in ALIASES.values():
        if a.builder:
            source, status = "built locally", "ready"
        else:
            installed = a.module is not None and package_dir(a.module) is not None
            source = a.install_command  # the chunk packages too (gemma3-270m)
            cached = (model_cache_dir(a.name) / "DONE").exists()
            status = "cached" if cached else ("installed" if installed else "not installed")
        table.add_row(a.name, a.task, a.params, source, status, a.hub_id or "-")
    Console().print(table)
    Console().print("Also accepted: a local model folder, a .gguf file, or a hub id (org/name, needs network).")
