"""The numbers every run logs under the same names: budget counters and the per-step `train/*` row.

ES iterations and GRPO steps both produce a `StepStats`, so `metrics.jsonl` reads the same for both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evotune.config import TrainConfig


@dataclass
class Budget:
    """Counters every run logs, and the stopping rule of `--budget`."""

    completions: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    wall: float = 0.0

    def add(self, stats: StepStats) -> None:
        self.completions += stats.completions
        self.completion_tokens += stats.completion_tokens
        self.prompt_tokens += stats.prompt_tokens
        self.wall += stats.times.get("iteration", 0.0)

    def spent(self, cfg: TrainConfig) -> str | None:
        b = cfg.budget
        if b.completions is not None and self.completions >= b.completions:
            return f"completion budget spent ({self.completions} >= {b.completions})"
        if b.tokens is not None and self.completion_tokens + self.prompt_tokens >= b.tokens:
            return f"token budget spent ({self.completion_tokens + self.prompt_tokens} >= {b.tokens})"
        return None

    def as_metrics(self) -> dict[str, float]:
        return {
            "budget/completions": self.completions,
            "budget/completion_tokens": self.completion_tokens,
            "budget/prompt_tokens": self.prompt_tokens,
            "budget/tokens": self.completion_tokens + self.prompt_tokens,
            "time/wall": self.wall,
        }


@dataclass
class StepStats:
    """What one iteration/step cost and scored: the shared `train/*`, `time/*` and budget inputs.

    `rewards` are what the method optimised: ES's per-member fitness, GRPO's per-completion rewards.
    """

    rewards: Sequence[float]
    accuracy: float = 0.0
    sample: str = ""
    completions: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    times: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # method metrics (train/updated, grpo/*), logged as-is

    def row(self, step: int, budget: Budget) -> dict[str, Any]:
        r = list(self.rewards) or [0.0]
        return {
            "step": step,
            "train/reward_mean": statistics.fmean(r),
            "train/reward_std": statistics.pstdev(r),
            "train/reward_min": min(r),
            "train/reward_max": max(r),
            "train/accuracy": self.accuracy,
            "train/sample": self.sample[:300],
            **{f"time/{n}": v for n, v in self.times.items()},
            **self.extra,
            **budget.as_metrics(),
        }
