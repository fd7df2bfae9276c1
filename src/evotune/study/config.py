"""The study's validated config: one YAML for both methods, the seeds, the budget and the analyses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from evotune.config import (
    BudgetConfig,
    ESConfig,
    EvalConfig,
    GenerateConfig,
    GRPOConfig,
    ModelConfig,
    RayConfig,
    TaskConfig,
    TrainConfig,
    _Strict,
    build_config,
    derive,
    variant_settings,
)


class Margins(_Strict):
    """The smallest effect that matters, per measure: fixed in the study config before the runs (pre-registered),
    never derived from a run. An interval across a claim's line that reaches past its margin on both sides is
    "underpowered"; "comparable" (claim 1) means inside ±margin."""

    reward: float = Field(default=5.0, gt=0, description="held-out reward points (conciseness: characters)")
    accuracy: float = Field(default=0.05, gt=0, description="held-out accuracy (fraction of items)")
    barrier: float = Field(default=5.0, gt=0, description="LMC barrier in reward points: a barrier counts above it")
    kl: float = Field(default=0.01, gt=0, description="per-token KL, nats")
    hacking: float = Field(default=0.05, gt=0, description="hacking rate (fraction of completions)")
    cosine: float = Field(default=0.05, gt=0, description="cosine between updates")
    fraction: float = Field(default=0.15, gt=0, description="half-way fraction f of a base→model path (claim 9)")
    degradation: float = Field(default=2.0, gt=0, description="reward lost or gained under weight noise")
    position: float = Field(default=0.25, gt=0, description="claim 13's position p between GRPO (0) and ES (1)")
    passk: float = Field(default=0.05, gt=0, description="pass@k difference")


class StudyAnalysis(_Strict):
    limit: int = Field(default=200, ge=1, description="held-out items every model is scored on (paired per item)")
    kl_prompts: int = Field(default=32, ge=1, description="prompts per KL source (on-task, each off-task, general)")
    off_tasks: list[str] = Field(default_factory=lambda: ["boolq"])
    off_limit: int | None = Field(default=None, ge=1, description="held-out items per off-task evaluation (default: limit)")
    lmc_points: int = Field(default=5, ge=2)
    lmc_limit: int = Field(default=200, ge=1, description="items per LMC point (≥ 200 resolves ~5-point barriers)")
    sigmas: list[float] = Field(default_factory=lambda: [0.001, 0.003])
    trials: int = Field(default=8, ge=1, description="robustness trials per σ (the mean over them is used)")
    robust_limit: int | None = Field(default=None, ge=1, description="held-out items per robustness trial (default: limit)")
    robust_methods: list[str] = Field(default_factory=lambda: ["es", "grpo", "es_null"],
                                      description="methods whose robustness is measured (claim 11 and its null check)")
    skip: list[str] = Field(default_factory=list)
    # claim 12 (temperature vs weight-perturbation sampling, on the base model); 0 leaves it unmeasured
    passk_n: int = Field(default=0, ge=0, description="samples per prompt for pass@k (0: not measured)")
    passk_task: str | None = Field(default=None, description="task for pass@k (default: the study's own task, "
                                   "with its generation length; another task uses its default length)")
    passk_prompts: int = Field(default=32, ge=1, description="held-out prompts pass@k is reported on")
    passk_select: int = Field(default=8, ge=1, description="train prompts that pick the best T and σ")
    passk_temperatures: list[float] = Field(default_factory=lambda: [0.7, 1.0])
    passk_sigmas: list[float] = Field(default_factory=lambda: [0.001, 0.003])


class StudyConfig(_Strict):
    name: str
    out: str | None = None
    # three per method: the fewest that give a spread (claims.MIN_SEEDS); fewer judge as inconclusive
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    threads: int | None = None
    methods: list[Literal["es", "grpo", "grpo_es", "es_null", "randopt"]] = Field(
        default_factory=lambda: ["es", "grpo", "grpo_es", "es_null"], min_length=1,
        description="what to train per seed: es, grpo, grpo_es (GRPO's update on completions from ES-perturbed "
        "members, grpo.sampler=es; claim 13), es_null (ES with each iteration's fitness randomly permuted: the "
        "control that shows what an ES that learned nothing would measure) and randopt (the best of "
        "budget.completions / es.prompts_per_iteration perturbations of the base, no update: check R)",
    )
    jobs: int = Field(default=1, ge=1, description="training runs at once, each its own process (with `threads` "
                      "torch threads each); runs are independent, so the weights do not depend on it")
    lmc_methods: list[Literal["es", "grpo", "grpo_es", "es_null"]] = Field(
        default_factory=lambda: ["es", "grpo"], min_length=1,
        description="methods whose runs get interpolation paths (base→run and between runs); the claims need es and grpo",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    generation: GenerateConfig = Field(default_factory=GenerateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    budget: BudgetConfig
    es: ESConfig = Field(default_factory=ESConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    analysis: StudyAnalysis = Field(default_factory=StudyAnalysis)
    margins: Margins = Field(default_factory=Margins, description="pre-registered smallest effects that matter")

    @model_validator(mode="after")
    def _budget(self) -> StudyConfig:
        if self.budget.completions is None and self.budget.tokens is None:
            raise ValueError("a study compares methods at a matched budget: set budget.completions or budget.tokens")
        return self

    @model_validator(mode="after")
    def _randopt_budget(self) -> StudyConfig:
        if "randopt" in self.methods and self.budget.completions is None:
            raise ValueError("methods: randopt needs budget.completions (its population is completions / "
                             "es.prompts_per_iteration); set budget.completions")
        return self

    def _randopt_settings(self) -> dict[str, Any]:
        """ES's N·T members, each scored on ES's P prompts: the same training completions as an ES run."""
        n = max(1, math.ceil((self.budget.completions or 0) / self.es.prompts_per_iteration))
        return {"es.population": n, "randopt.members_per_step": min(self.es.population, n),
                "randopt.top_k": min(4, n)}

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"studies_out/{self.name}")

    def run_config(self, method: str, seed: int) -> TrainConfig:
        """One training run of the study; `grpo_es` is a GRPO run whose completions ES members write."""
        shared = self.model_dump(include={"threads", "model", "task", "generation", "eval", "budget", "es", "grpo", "ray"})
        kind, settings = variant_settings(method)
        if kind == "randopt":  # ES's N·T members on P prompts each: the matched budget, spent on selection
            settings = {**settings, **self._randopt_settings()}
        return derive(shared, {
            **settings, "method": kind, "seed": seed, "run_dir": str(self.out_dir / "runs" / f"{method}_seed{seed}"),
            # iterations/steps are caps; the shared budget is what stops both methods
            "es.iterations": max(self.es.iterations, 10_000), "grpo.steps": max(self.grpo.steps, 10_000),
        })


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    return build_config(path, overrides, StudyConfig)


def study_yaml(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
