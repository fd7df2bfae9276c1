"""`evotune` command line: thin typer commands that validate, then call the library.

Each command module registers its commands on the apps of `cli.app` when imported here. `main` is the
console script: it runs the same app, with usage errors (unknown option, bad value, missing argument)
as one line, like every other error.
"""

import sys

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

__all__ = ["app", "main"]


def main() -> None:
    """`evotune …`: the app, with usage errors as `error: …; see `evotune CMD --help``, exit 2.

    typer vendors its own click, so its exceptions are matched by class name, not imported.
    """
    try:
        rv = app(standalone_mode=False)
    except Exception as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        ctx = getattr(exc, "ctx", None)
        if "NoArgsIsHelpError" in names and ctx is not None:  # bare `evotune CMD`: its help, as before
            print(ctx.get_help())
            sys.exit(getattr(exc, "exit_code", 2))
        if "Abort" in names:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        if "ClickException" not in names:
            raise
        where = f"; see `{ctx.command_path} --help`" if "UsageError" in names and ctx is not None else ""
        text = ' '.join(exc.format_message().split()).rstrip('.')  # type: ignore[attr-defined]
        print(f"error: {text}{where}", file=sys.stderr)
        sys.exit(2 if "UsageError" in names else getattr(exc, "exit_code", 1))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
