"""The `tunelab` Typer application that every command module registers on (`@app.command()`).

It lives apart from cli/main.py so that main can import the command modules plainly (the layer test
reads those imports) without a cycle: command modules import this module, main imports both.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tunelab",
    help="Adapt an open LLM to your use case on the machine you have.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """Adapt an open LLM to your use case on the machine you have."""
    # --debug is declared here for parsing and --help; cli.main.run() reads it from argv (errors raise after parsing)
