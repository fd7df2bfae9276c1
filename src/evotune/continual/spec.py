"""What one continual run is: its settings and their checks (torch-free, so the CLI reads its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evotune.config import BudgetConfig
from evotune.errors import ConfigError

# `--set` keys the continual run decides itself (per stage, or through its own flags).
_RESERVED_SECTIONS = ("task", "model", "run_dir", "method", "budget")
_RESERVED_KEYS = ("seed", "threads", "eval.limit", "generation.max_new_tokens")


@dataclass
class ContinualSpec:
    """One continual run: the task sequence, the method, the per-stage budget and shared settings."""

    tasks: list[str]
    run_dir: str
    budget: str
    method: str = "es"
    model: str = "smollm2-135m"
    seed: int = 0
    eval_limit: int | None = 100
    max_new_tokens: int | None = None
    kl_prompts: int = 8
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted TrainConfig keys (`--set`)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> option -> value
    threads: int | None = None
    progress: bool = True

    def validate(self) -> BudgetConfig:
        if not self.tasks:
            raise ConfigError("continual: --tasks is empty")
        dup = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if dup:
            raise ConfigError(f"continual: task(s) {dup} appear twice; each task is one column of the matrix")
        if self.method not in ("es", "grpo"):
            raise ConfigError(f"continual: --method must be es or grpo, got {self.method!r}")
        unknown = sorted(set(self.task_options) - set(self.tasks))
        if unknown:
            raise ConfigError(f"continual: --task-opt names task(s) {unknown} that are not in --tasks")
        for key in self.overrides:
            if key.split(".")[0] in _RESERVED_SECTIONS or key in _RESERVED_KEYS:
                raise ConfigError(
                    f"continual: --set {key} is decided by the continual run; use --tasks, --task-opt, --model, "
                    "--budget-per-task, --seed, --eval-limit, --max-new-tokens or --threads"
                )
        budget = BudgetConfig.parse(self.budget)
        if budget.completions is None and budget.tokens is None:
            raise ConfigError("continual: --budget-per-task is required (completions=N and/or tokens=N)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError("continual: --eval-limit must be >= 1")
        if self.kl_prompts < 0:
            raise ConfigError("continual: --kl-prompts must be >= 0")
        return budget
