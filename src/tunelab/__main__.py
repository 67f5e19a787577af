"""`python -m tunelab` = the `tunelab` command."""

from tunelab.cli.main import run

run()
