"""The numbers every run logs under the same names: budget counters and the per-step `train/*` row.

ES iterations and GRPO steps both produce a `StepStats`, so `metrics.jsonl` reads the same for both.
The names are constants here so writers and readers (resume, `evotune runs`, sweeps) cannot drift.

`train/reward_*` summarise `StepStats.rewards`, the scores the method's update weighs, so each
names one quantity per method: ES members' fitness (each a mean, or pass@k, over the iteration's
prompts and samples), GRPO's single completions. `train/reward_mean` agrees between them for the
default `es.fitness: mean`; `train/reward_std` never does (spread between members vs between
completions; the former is far smaller). The key is kept, not renamed, because every run on disk
and every tracker has it; compare spreads across methods with `eval/reward_std` (per held-out
completion for every method). GRPO's within-group spread, what its advantages divide by, is
TRL's `grpo/reward_std`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evotune.config import TrainConfig

STEP = "step"
TRAIN_REWARD_MEAN = "train/reward_mean"  # present in every train row, absent from eval rows: marks a committed step
TRAIN_REWARD_STD = "train/reward_std"  # method-relative: see the module docstring
TRAIN_REWARD_MIN = "train/reward_min"
TRAIN_REWARD_MAX = "train/reward_max"
TRAIN_ACCURACY = "train/accuracy"
TRAIN_SAMPLE = "train/sample"
TRAIN_STEP_NORM = "train/step_norm"  # ES: ‖θₖ − θₖ₋₁‖₂ over the evolving weights (0: no update)
TRAIN_STEP_RMS = "train/step_rms"  # TRAIN_STEP_NORM / √(evolving weights): comparable across models
EVAL_PREFIX = "eval/"  # `eval/<key>` for each key of an evaluation summary
EVAL_REWARD_MEAN = "eval/reward_mean"  # present in every eval row: marks a held-out evaluation
EVAL_ACCURACY = "eval/accuracy"
BUDGET_COMPLETIONS = "budget/completions"
BUDGET_COMPLETION_TOKENS = "budget/completion_tokens"
BUDGET_PROMPT_TOKENS = "budget/prompt_tokens"
BUDGET_TOKENS = "budget/tokens"
TIME_WALL = "time/wall"


def is_train_row(row: dict[str, Any]) -> bool:
    """A metrics row that records a trained step (not an eval row of the same step)."""
    return TRAIN_REWARD_MEAN in row


def is_eval_row(row: dict[str, Any]) -> bool:
    """A metrics row that records a held-out evaluation."""
    return EVAL_REWARD_MEAN in row


def eval_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """An evaluation summary under its metric names (`reward_mean` → `eval/reward_mean`)."""
    return {f"{EVAL_PREFIX}{k}": v for k, v in summary.items()}


def eval_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The evaluation summary an eval row recorded (`eval_metrics` read back)."""
    return {k[len(EVAL_PREFIX):]: v for k, v in row.items() if k.startswith(EVAL_PREFIX)}


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
            BUDGET_COMPLETIONS: self.completions,
            BUDGET_COMPLETION_TOKENS: self.completion_tokens,
            BUDGET_PROMPT_TOKENS: self.prompt_tokens,
            BUDGET_TOKENS: self.completion_tokens + self.prompt_tokens,
            TIME_WALL: self.wall,
        }

    @classmethod
    def from_metrics(cls, row: dict[str, Any]) -> Budget:
        """The budget a metrics row recorded (`as_metrics` read back; resume uses it where no checkpoint has it)."""
        return cls(int(row[BUDGET_COMPLETIONS]), int(row[BUDGET_COMPLETION_TOKENS]), int(row[BUDGET_PROMPT_TOKENS]),
                   float(row[TIME_WALL]))


@dataclass
class StepStats:
    """What one iteration/step cost and scored: the shared `train/*`, `time/*` and budget inputs.

    `rewards` are what the method optimised: ES's per-member fitness, GRPO's per-completion rewards
    (hence `train/reward_std` differs in kind between them; see the module docstring).
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
            STEP: step,
            TRAIN_REWARD_MEAN: statistics.fmean(r),
            TRAIN_REWARD_STD: statistics.pstdev(r),
            TRAIN_REWARD_MIN: min(r),
            TRAIN_REWARD_MAX: max(r),
            TRAIN_ACCURACY: self.accuracy,
            TRAIN_SAMPLE: self.sample[:300],
            **{f"time/{n}": v for n, v in self.times.items()},
            **self.extra,
            **budget.as_metrics(),
        }
