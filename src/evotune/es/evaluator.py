"""Map population members to fitness. Every evaluator returns the same numbers for the same inputs.

`SequentialEvaluator` is the full-rank reference: for each member, perturb in place, generate
greedily, score, restore exactly. Other evaluators (population-batched low rank, Ray actors)
implement the same `__call__`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evotune.backends.hf import generate
from evotune.es.params import EvolvingParams
from evotune.es.strategy import Member
from evotune.evaluation import score_rows
from evotune.tasks.base import Example, Task


@dataclass
class PopulationResult:
    """Fitness per member (mean reward over the prompts) and what it cost."""

    fitness: list[float]
    completions: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    times: dict[str, float] = field(default_factory=dict)
    accuracy: float = 0.0
    sample: str = ""
    extra: dict[str, float] = field(default_factory=dict)  # evaluator-specific metrics, logged as-is
    correct: int = 0

    def add_member(self, rows: Sequence[dict[str, Any]], prompt_tokens: int) -> None:
        """Fold one member's scored rows in; its fitness is the mean reward over its prompts."""
        self.fitness.append(statistics.fmean(r["reward"] for r in rows))
        self.correct += sum(1 for r in rows if r["correct"])
        self.completions += len(rows)
        self.completion_tokens += sum(r["n_tokens"] for r in rows)
        self.prompt_tokens += prompt_tokens
        self.accuracy = self.correct / self.completions if self.completions else 0.0
        if not self.sample and rows:
            self.sample = rows[0]["completion"]


class Evaluator(Protocol):
    def __call__(
        self, members: Sequence[Member], examples: Sequence[Example], prompts: Sequence[str]
    ) -> PopulationResult: ...


class SequentialEvaluator:
    """Full-rank ES, one member after another, in place (memory ≈ model + fp32 master)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: Task,
        params: EvolvingParams,
        sigma: float,
        max_new_tokens: int,
        batch_size: int,
    ) -> None:
        self.model, self.tokenizer, self.task, self.params = model, tokenizer, task, params
        self.sigma, self.max_new_tokens, self.batch_size = sigma, max_new_tokens, batch_size

    def __call__(
        self, members: Sequence[Member], examples: Sequence[Example], prompts: Sequence[str]
    ) -> PopulationResult:
        times = {"noise": 0.0, "generate": 0.0, "score": 0.0}
        res = PopulationResult(fitness=[])
        n_prompt_tokens = sum(len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        try:
            for m in members:
                t0 = time.perf_counter()
                # perturb writes master + sign·σ·ε from the master, so the previous member needs no restore
                self.params.perturb(m.seed, m.sign, self.sigma)
                t1 = time.perf_counter()
                comps = generate(
                    self.model, self.tokenizer, prompts, self.max_new_tokens, batch_size=self.batch_size
                )
                t2 = time.perf_counter()
                rows = score_rows(self.task, examples, comps)
                times["noise"] += t1 - t0
                times["generate"] += t2 - t1
                times["score"] += time.perf_counter() - t2
                res.add_member(rows, n_prompt_tokens)
        finally:
            t3 = time.perf_counter()
            self.params.restore()  # exact: the weights are bit-for-bit those before the population
            times["noise"] += time.perf_counter() - t3
        res.times = times
        return res
