"""tunelab's command line: thin typer commands that parse, call the API, print."""
