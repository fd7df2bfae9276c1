"""GRPO settings checked before any model is loaded: what TRL would reject or silently mis-handle."""

from __future__ import annotations

from typing import Any

from evotune.config import TrainConfig
from evotune.errors import ConfigError

# Loss types whose defaults work with token-level importance sampling (luspo/vespo need other settings).
SUPPORTED_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
# Schedules that need no extra arguments and no metric to follow.
SUPPORTED_SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt",
)


def completions_per_step(cfg: TrainConfig) -> int:
    return cfg.grpo.prompts_per_step * cfg.grpo.num_generations


MAX_MICRO_BATCH = 8  # completions per backward pass when grpo.gradient_accumulation_steps is not set


def accumulation_steps(cfg: TrainConfig) -> int:
    """grpo.gradient_accumulation_steps, or the fewest equal micro-batches of ≤ MAX_MICRO_BATCH completions."""
    if cfg.grpo.gradient_accumulation_steps is not None:
        return cfg.grpo.gradient_accumulation_steps
    batch = completions_per_step(cfg)
    return next(d for d in range(1, batch + 1) if batch % d == 0 and batch // d <= MAX_MICRO_BATCH)


def validate_grpo(cfg: TrainConfig) -> None:
    """Reject settings TRL would reject (or silently mis-handle) before any model is loaded."""
    g = cfg.grpo
    if cfg.method != "grpo":
        raise ConfigError(f"method is {cfg.method!r}; a GRPO run needs method: grpo (use `evotune train grpo`)")
    batch = completions_per_step(cfg)
    if batch % g.num_generations:  # cannot happen with prompts_per_step × K, kept as TRL's own invariant
        raise ConfigError(f"generation batch {batch} is not divisible by grpo.num_generations={g.num_generations}")
    ga = accumulation_steps(cfg)
    if batch % ga:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        raise ConfigError(
            f"a GRPO step generates grpo.prompts_per_step × grpo.num_generations = {g.prompts_per_step} × "
            f"{g.num_generations} = {batch} completions, which grpo.gradient_accumulation_steps={ga} cannot split "
            f"into equal micro-batches: set grpo.gradient_accumulation_steps to a divisor of {batch} "
            f"({', '.join(map(str, divisors))}) or change grpo.prompts_per_step / grpo.num_generations"
        )
    if g.sampler == "es" and cfg.es.antithetic and g.num_generations % 2:
        raise ConfigError(
            f"grpo.sampler=es with es.antithetic pairs members ±ε, so grpo.num_generations must be even, got "
            f"{g.num_generations}: make it even or set es.antithetic=false"
        )
    if g.loss_type not in SUPPORTED_LOSSES:
        raise ConfigError(f"grpo.loss_type {g.loss_type!r} is not supported; use one of {', '.join(SUPPORTED_LOSSES)}")
    if g.lr_scheduler not in SUPPORTED_SCHEDULERS:
        raise ConfigError(
            f"grpo.lr_scheduler {g.lr_scheduler!r} is not supported; use one of {', '.join(SUPPORTED_SCHEDULERS)}"
        )


def validate_task_fit(cfg: TrainConfig, task: Any) -> None:
    """Each step needs `prompts_per_step` distinct train prompts."""
    n_train = len(task.split("train"))
    if cfg.grpo.prompts_per_step > n_train:
        raise ConfigError(
            f"grpo.prompts_per_step={cfg.grpo.prompts_per_step} exceeds the {n_train} train prompts of task "
            f"{cfg.task.name!r}: lower grpo.prompts_per_step or raise task.n_train"
        )
