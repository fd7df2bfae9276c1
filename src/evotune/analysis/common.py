"""Small helpers the analyses share: a task from what the caller gave, memory between models, JSON output.

What a RUN_OR_MODEL argument names (`Entry`, `resolve_entries`, the comparability checks) lives in
`backends.resolve`; statistics live in `evotune.stats`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evotune.config import TaskConfig
from evotune.errors import AnalysisError
from evotune.tasks import Task, build_task, get_task


def as_task(task: Any) -> Any:
    """A Task from a Task, a registered name / `module:Class`, or a TaskConfig."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get_task(task)
    if isinstance(task, TaskConfig):
        return build_task(task)
    raise TypeError(f"cannot make a task from {task!r}")


def free_memory() -> None:
    """Models are loaded one after another; collect the previous one before the next load."""
    gc.collect()


def jsonable(obj: Any) -> Any:
    """Plain JSON: NaN/inf become null, tuples lists, paths strings, tensors/numpy numbers floats."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def parse_floats(text: str | Iterable[float], flag: str = "") -> list[float]:
    """`0.001,0.003` or an iterable of numbers → finite floats, at least one (a clear error on anything else,
    naming `flag`: σ = nan or an empty list would give a result about nothing, an empty sweep axis none)."""
    what = f"{flag} {str(text)[:80]!r}" if flag else f"{str(text)[:80]!r}"
    try:
        vals = [float(t) for t in text.split(",") if t.strip()] if isinstance(text, str) else [float(v) for v in text]
    except ValueError:
        vals = []
    if not vals or not all(math.isfinite(v) and abs(v) < 1e6 for v in vals):
        raise AnalysisError(f"{what}: give one or more finite numbers, e.g. 0.001,0.003 (expected comma-separated "
                            "numbers)")
    return vals
