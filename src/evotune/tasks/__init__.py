"""Tasks: data with seeded disjoint splits, prompt construction, and rewards."""

from evotune.config import TaskConfig
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
    task_modules,
)

# Built-in tasks register themselves on import.
from evotune.tasks import boolq, chemistry, conciseness, countdown, jsonl_task, math_task, safety  # noqa: E402,F401  isort: skip



def build_task(cfg: TaskConfig) -> Task:
    """The task a `TaskConfig` names, with its options, data files and prompt style."""
    opts = dict(cfg.options)
    for k in ("data", "eval_data", "reward"):
        v = getattr(cfg, k)
        if v is not None:
            opts[k] = v
    style = PromptStyle(cfg.chat_template, cfg.system_prompt, cfg.response_prefix)
    return get_task(cfg.name, seed=cfg.seed, n_train=cfg.n_train, n_eval=cfg.n_eval, prompt_style=style, **opts)


__all__ = [
    "task_modules",
    "build_task",
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
