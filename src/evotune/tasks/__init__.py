"""Tasks: data with seeded disjoint splits, prompt construction, and rewards."""

from evotune.tasks.base import (
    Example,
    ExampleTypeError,
    PromptStyle,
    Reward,
    Split,
    Task,
    TaskError,
    available_tasks,
    disjoint_split,
    get_task,
    register_task,
    stable_int,
)

# Built-in tasks register themselves on import.
from evotune.tasks import boolq, chemistry, conciseness, countdown, jsonl_task, math_task  # noqa: E402,F401  isort: skip

__all__ = [
    "Example",
    "ExampleTypeError",
    "PromptStyle",
    "Reward",
    "Split",
    "Task",
    "TaskError",
    "available_tasks",
    "disjoint_split",
    "get_task",
    "register_task",
    "stable_int",
]
