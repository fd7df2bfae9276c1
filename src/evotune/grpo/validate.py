"""The checks a GRPO run needs beyond its config's own validation: the method, and the task's fit."""

from __future__ import annotations

from typing import Any

from evotune.config import TrainConfig
from evotune.errors import ConfigError


def completions_per_step(cfg: TrainConfig) -> int:
    return cfg.grpo.completions_per_step


def accumulation_steps(cfg: TrainConfig) -> int:
    """grpo.gradient_accumulation_steps, or the fewest equal micro-batches of ≤ MAX_MICRO_BATCH completions."""
    return cfg.grpo.accumulation_steps


def validate_grpo(cfg: TrainConfig) -> None:
    """The settings themselves are validated where the config is built (`config.GRPOConfig`); a GRPO
    trainer only checks that it was handed a GRPO run."""
    if cfg.method != "grpo":
        raise ConfigError(f"method is {cfg.method!r}; a GRPO run needs method: grpo (use `evotune train grpo`)")


def validate_task_fit(cfg: TrainConfig, task: Any) -> None:
    """Each step needs `prompts_per_step` distinct train prompts."""
    n_train = len(task.split("train"))
    if cfg.grpo.prompts_per_step > n_train:
        raise ConfigError(
            f"grpo.prompts_per_step={cfg.grpo.prompts_per_step} exceeds the {n_train} train prompts of task "
            f"{cfg.task.name!r}: lower grpo.prompts_per_step or raise task.n_train"
        )
