"""Every error evotune raises on purpose, in one place.

Each is an `EvotuneError`: the CLI prints its message as one line (it names the problem and
what to do) and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import unicodedata

MAX_TOKEN = 160  # an echoed value longer than this is shown by its ends and its length
MAX_MESSAGE = 1500


def one_line(text: str) -> str:
    """`text` as one short printable line: control, separator and surrogate characters escaped, any run
    of non-space characters over MAX_TOKEN shortened to its ends, the whole capped at MAX_MESSAGE.

    Messages echo user input (a field name, an answer, a YAML key); a 5 000-digit key or one holding a
    newline must not turn "one line naming the problem" into a screenful. Idempotent, so an error that
    crosses a process boundary (pickled with its message) reads the same on the other side.
    """
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs", "Zl", "Zp") or (cat == "Cf" and ch not in "\u200d"):
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii") if cat != "Cs"
                       else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    words = "".join(out).split(" ")
    short = [w if len(w) <= MAX_TOKEN else f"{w[:100]}…[{len(w)} chars]…{w[-40:]}" for w in words]
    msg = " ".join(short)
    return msg if len(msg) <= MAX_MESSAGE else f"{msg[:MAX_MESSAGE - 60]}…[{len(msg)} chars in all]…{msg[-40:]}"


class EvotuneError(Exception):
    """Base of the errors whose message is meant for the user as it is (kept to one short line)."""

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


class ConfigError(EvotuneError, ValueError):
    """A configuration value is invalid; the message names the field."""


class TaskError(EvotuneError, ValueError):
    """A task was configured or fed data it cannot use (bad option, malformed row, ...)."""


class ExampleTypeError(TaskError, TypeError):
    """An `Example` field, or an answer a task cannot grade, has the wrong type."""


class PluginError(TaskError):
    """User code (a `--task module:Class` plug-in, its reward or build) raised; the message names it and where."""


class RewardTimeout(TaskError):
    """A reward function ran past its time limit."""


class ModelError(EvotuneError, RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


class AnalysisError(ModelError):
    """An analysis cannot run on the models or runs it was given."""


class RunStateError(EvotuneError, RuntimeError):
    """A run directory is inconsistent (trajectory, config and checkpoints disagree)."""


class WorkerError(EvotuneError, RuntimeError):
    """A distributed worker failed in a way that a retry cannot fix."""


class ReplicaMismatchError(RunStateError):
    """A worker's replica no longer holds the driver's weights bit for bit."""


class MatrixError(EvotuneError, ValueError):
    """A continual-learning accuracy matrix is malformed."""


DEBUG_HINT = "run with --debug (or EVOTUNE_DEBUG=1) for the traceback"


def raised_at(exc: BaseException, modules: set[str] | None = None) -> str:
    """`file:line in function` of the deepest frame that raised `exc` (among `modules`, when given)."""
    tb, where = exc.__traceback__, ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if modules is None or tb.tb_frame.f_globals.get("__name__") in modules:
            where = f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return where


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for one line."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
