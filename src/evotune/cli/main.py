"""`evotune` command line: thin typer commands that validate, then call the library.

Each command module registers its commands on the apps of `cli.app` when imported here.
"""

from evotune.cli import (  # noqa: F401  (imported for their commands)
    analyze_cmd,
    continual_cmd,
    judge_cmd,
    passk_cmd,
    run_cmd,
    serve_cmd,
    study_cmd,
    sweep_cmd,
    train_cmd,
)
from evotune.cli.app import app

serve_cmd.register(app)
judge_cmd.register(app)

__all__ = ["app"]

if __name__ == "__main__":
    app()
