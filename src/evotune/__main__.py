"""`python -m evotune ...` runs the CLI."""

from evotune.cli.main import app

app()
