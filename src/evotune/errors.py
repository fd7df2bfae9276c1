"""Every error evotune raises on purpose, in one place.

Each is an `EvotuneError`: the CLI prints its message as one line (it names the problem and
what to do) and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EvotuneError(Exception):
    """Base of the errors whose message is meant for the user as it is."""


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
