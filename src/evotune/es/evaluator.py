"""Map population members to fitness. Every evaluator returns the same numbers for the same inputs.

`SequentialEvaluator` is the full-rank reference: for each member, perturb in place, generate
greedily, score, restore exactly. Other evaluators (population-batched low rank, Ray actors)
implement the same `__call__`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evotune.backends.hf import generate
from evotune.config import TrainConfig
from evotune.es.params import EvolvingParams
from evotune.es.strategy import FitnessKind, Member, prompt_scores, sigma_of
from evotune.evaluation import score_rows
from evotune.runs.metrics import StepStats
from evotune.tasks.base import Example, Task


@dataclass
class PopulationResult(StepStats):
    """Fitness per member (mean score over its prompts, in `rewards`) and what it cost.

    `prompt_rewards` is the members × prompts score matrix that per-prompt baselines need (a prompt's
    score is its reward, or with k samples their mean or pass@k: `es.fitness`).
    """

    correct: int = 0
    prompt_rewards: list[list[float]] = field(default_factory=list)

    @property
    def fitness(self) -> list[float]:
        return list(self.rewards)

    def add_member(
        self, rows: Sequence[dict[str, Any]], prompt_tokens: int, k: int = 1, fitness: FitnessKind = "mean"
    ) -> None:
        """Fold one member's scored rows in (k per prompt, prompt-major); its fitness is the mean over prompts."""
        scores = prompt_scores([r["reward"] for r in rows], [bool(r["correct"]) for r in rows], k, fitness)
        greedy = k == 1 and fitness == "mean"  # the paper's fitness, computed exactly as before
        self.rewards.append(statistics.fmean(r["reward"] for r in rows) if greedy else statistics.fmean(scores))
        self.prompt_rewards.append(scores)
        self.correct += sum(1 for r in rows if r["correct"])
        self.completions += len(rows)
        self.completion_tokens += sum(r["n_tokens"] for r in rows)
        self.prompt_tokens += prompt_tokens
        self.accuracy = self.correct / self.completions if self.completions else 0.0
        if not self.sample and rows:
            self.sample = rows[0]["completion"]


class Evaluator(Protocol):
    """Maps a population to fitness; every implementation gives the same numbers for the same inputs."""

    def __call__(
        self, members: Sequence[Member], examples: Sequence[Example], prompts: Sequence[str]
    ) -> PopulationResult: ...


Row = dict[str, Any]  # a trajectory row (`es.trajectory.trajectory_row`)
Checkpoint = tuple[int, str, str | None]  # (iteration, directory, recorded checksum)


@runtime_checkable
class Follower(Protocol):
    """An evaluator that keeps its own copies of the weights (Ray replicas) rather than sharing the trainer's.

    The trainer hands it every row once final, in step order, and each checkpoint it writes (a
    replacement replica starts from the newest instead of replaying every row); it reads no files.
    """

    def follow(self, rows: Sequence[Row], checkpoint: Checkpoint | None = None) -> None: ...


# The one constructor contract: every evaluator (sequential, batched low rank, Ray) is built from
# (model, tokenizer, task, params, cfg), after the trainer has loaded its model.
EvaluatorFactory = Callable[[Any, Any, Task, EvolvingParams, TrainConfig], Evaluator]


class PopulationEvaluator:
    """What every in-process evaluator holds: model, task, evolving weights and generation settings."""

    def __init__(self, model: Any, tokenizer: Any, task: Task, params: EvolvingParams, cfg: TrainConfig) -> None:
        self.model, self.tokenizer, self.task, self.params = model, tokenizer, task, params
        self.max_new_tokens = task.max_new_tokens(cfg.generation.max_new_tokens)
        self.batch_size = cfg.generation.batch_size
        self.compile_backend = cfg.generation.compile_backend if cfg.generation.compile else None
        self.min_new_tokens = cfg.generation.min_new_tokens
        self.samples, self.temperature, self.fitness = cfg.es.samples_per_prompt, cfg.es.temperature, cfg.es.fitness

    def prompt_tokens(self, prompts: Sequence[str]) -> int:
        """Prompt tokens one member reads, counted as generation feeds them (no special tokens added)."""
        return sum(len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)


class SequentialEvaluator(PopulationEvaluator):
    """Full-rank ES, one member after another, in place (memory ≈ model + fp32 master)."""

    def __call__(
        self, members: Sequence[Member], examples: Sequence[Example], prompts: Sequence[str]
    ) -> PopulationResult:
        times = {"noise": 0.0, "generate": 0.0, "score": 0.0}
        res = PopulationResult(rewards=[])
        k = self.samples
        n_prompt_tokens = self.prompt_tokens(prompts) * k  # every sample reads its prompt
        rows_in = [p for p in prompts for _ in range(k)] if k > 1 else list(prompts)  # prompt-major
        examples_in = [e for e in examples for _ in range(k)] if k > 1 else list(examples)
        try:
            for m in members:
                t0 = time.perf_counter()
                # perturb writes master + sign·σ·ε from the master, so the previous member needs no restore
                self.params.perturb(m.seed, m.sign, sigma_of(m))
                t1 = time.perf_counter()
                comps = generate(
                    self.model, self.tokenizer, rows_in, self.max_new_tokens, batch_size=self.batch_size,
                    temperature=self.temperature, seed=m.sample_seed,
                    compile_backend=self.compile_backend, min_new_tokens=self.min_new_tokens,
                )
                t2 = time.perf_counter()
                rows = score_rows(self.task, examples_in, comps)
                times["noise"] += t1 - t0
                times["generate"] += t2 - t1
                times["score"] += time.perf_counter() - t2
                res.add_member(rows, n_prompt_tokens, k, self.fitness)
        finally:
            t3 = time.perf_counter()
            self.params.restore()  # exact: the weights are bit-for-bit those before the population
            times["noise"] += time.perf_counter() - t3
        res.times = times
        return res
