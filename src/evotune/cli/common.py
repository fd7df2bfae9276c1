"""Helpers shared by the CLI modules: clean errors and config assembly from flags."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from evotune.errors import ConfigError, EvotuneError
from evotune.runs.layout import CONFIG_FILE, is_run

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause and fix: every `EvotuneError`, file-system refusals, non-finite numbers."""
    return (EvotuneError, OSError, FloatingPointError)


def one_line(exc: BaseException) -> str:
    """The message of a user error as one line (OS errors name the file and the reason)."""
    if isinstance(exc, OSError) and not isinstance(exc, EvotuneError) and exc.strerror:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        text = f"{where}: {exc.strerror}" if exc.filename else exc.strerror
        if isinstance(exc, PermissionError):
            text += " (choose a writable location, or fix its permissions)"
        return text
    return str(exc)


def debugging() -> bool:
    """`--debug` or EVOTUNE_DEBUG=1: errors print their traceback as well as their one line."""
    return os.environ.get("EVOTUNE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _print_error(text: str, exc: BaseException) -> None:
    if debugging():
        traceback.print_exception(exc)
    console.print(f"[bold red]error:[/] {' '.join(text.splitlines())}", highlight=False, soft_wrap=True)


def plugin_failure(exc: BaseException) -> str | None:
    """One line for an exception raised inside user plug-in code (any hook), or None when it did not."""
    from evotune.errors import DEBUG_HINT, describe, raised_at
    from evotune.tasks.base import plugin_modules

    mods = plugin_modules()
    where = raised_at(exc, mods) if mods else ""
    if not where:
        return None
    return f"plug-in code raised {describe(exc)} (at {where}); {DEBUG_HINT}"


def friendly(fn: F) -> F:
    """Turn expected user errors into a one-line message and exit code 2 (no traceback); Ctrl-C exits 130.

    A user plug-in's bug is one line naming the plug-in file and line; `--debug` shows tracebacks.
    """

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: a training run keeps every finished iteration; "
                          "continue it with the same command plus --resume", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except user_errors() as exc:
            _print_error(one_line(exc), exc)
            raise typer.Exit(2) from None
        except Exception as exc:
            if "evotune.tasks.base" in sys.modules and (line := plugin_failure(exc)) is not None:
                _print_error(line, exc)
                raise typer.Exit(2) from None
            if not type(exc).__module__.startswith("ray."):
                if debugging():
                    raise  # --debug: the traceback, as a bug report needs it
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                console.print(f"[bold red]error:[/] internal error ({type(exc).__name__}: {first}); this is a bug "
                              "in evotune, not in your input: rerun with --debug for the traceback and report it "
                              "(a training run keeps its finished iterations: add --resume)",
                              highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            first = (str(exc).strip().splitlines() or [""])[0]
            console.print(f"[bold red]error:[/] Ray failed ({type(exc).__name__}: {first}); check the cluster "
                          "(`ray status`), then rerun the command (training: add --resume)",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def check_out(path: Path | None, kind: str = "dir", what: str = "--out") -> Path | None:
    """Refuse an output path that would overwrite a run's own files, or that is a file where a folder goes
    (or the reverse) — before any work, so a refusal costs nothing and writes nothing."""
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    run = next((q for q in (p, *p.parents) if is_run(q)), None)
    if run is not None:
        raise ConfigError(f"{what} {path} is {'the' if run == p else 'inside the'} run directory {run}; writing there "
                          "would overwrite the run's own files: choose a folder outside it")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a folder (it is created if missing)")
    if kind == "file" and p.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give a file path, e.g. {Path(path) / 'result.json'}")
    return path


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """`--set es.sigma=0.002` pairs; values are parsed as YAML scalars (numbers, bools, lists)."""

    from evotune.config import parse_yaml  # pydantic: loaded when a command runs, not for --help

    out: dict[str, Any] = {}
    for s in sets or []:
        key, sep, val = s.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {s!r:.100}: use KEY=VALUE, e.g. es.sigma=0.002")
        if not val.strip():  # an empty value would be dropped as "not given" and the old one kept, silently
            raise ConfigError(f"--set {key.strip()!r:.100} has no value; give one, e.g. {key.strip()[:60]}=VALUE")
        if key.strip() in out:
            raise ConfigError(f"--set {key.strip()!r:.100} is given twice; give each field once")
        try:
            out[key.strip()] = parse_yaml(val)
        except ValueError as exc:
            raise ConfigError(f"--set {s!r:.100}: the value is not valid YAML: {exc}; quote it, e.g. "
                              "--set 'KEY=\"text\"'") from None
    return out


def split_csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def assemble(config: Path | None, run_dir: str | None, resume: bool, overrides: dict[str, Any]) -> Any:
    """Config from YAML (or the run's stored config on --resume) plus explicit flag overrides."""
    from evotune.config import build_config

    if resume and config is None:
        if run_dir is None:
            raise ConfigError("--resume needs --run-dir (or --config)")
        config = Path(run_dir) / CONFIG_FILE
        if not config.is_file():
            raise ConfigError(f"--resume: {run_dir} is not a run directory (no config.yaml)")
    return build_config(config, overrides)


def print_tables(ts: Sequence[Any]) -> None:
    """Print `report.tables.Table`s as rich tables (the same layout as the HTML report)."""
    from evotune.report.html import fmt

    for t in ts:
        rt = Table(title=t.title)
        for c in t.columns:
            rt.add_column(c)
        for r in t.rows:
            rt.add_row(*(fmt(v) for v in r))
        console.print(rt)
        if t.note:
            console.print(f"[dim]{t.note}[/]")
