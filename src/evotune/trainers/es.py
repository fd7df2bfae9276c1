"""The ES trainer: one iteration of Evolution Strategies, top to bottom.

    members = ask(seed, k, N)                    # seeds only: noise is regenerated on demand
    fitness = evaluate(members, prompts)         # perturb, greedy-generate, score, exact restore
    coeffs  = tell(members, fitness, shaping)    # z-score (default) or centered rank, per seed
    θ      += (α/N) · Σ coeffs_s · ε(s)          # fp32 master, then written to the model
    commit (seeds, fitness) to trajectory.jsonl  # replay and resume need nothing else

Everything around it (run directory, budget, metrics, evals, checkpoints, summary) is the shared
`Trainer` frame. Checkpoints are a cache: the weights of iteration k are a pure function of the
base model and the first k trajectory rows, which is how resume and `replay` rebuild them.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from evotune.backends.models import load_model
from evotune.config import TrainConfig
from evotune.es import local_evaluator
from evotune.es.evaluator import Evaluator, EvaluatorFactory
from evotune.es.params import EvolvingParams, make_params
from evotune.es.strategy import ask, tell
from evotune.es.trajectory import read_trajectory, rebuild
from evotune.runs.metrics import Budget, StepStats
from evotune.runs.rundir import append_jsonl, keep_rows
from evotune.tasks import Task, build_task
from evotune.trainers.frame import Trainer


def make_evaluator(model: Any, tok: Any, task: Task, params: EvolvingParams, cfg: TrainConfig) -> Evaluator:
    """Ray workers when `cfg.ray` asks for them, else the in-process evaluator of `cfg.es.noise`."""
    if cfg.ray.enabled:
        from evotune.distributed import RayEvaluator  # Ray is heavy: imported only when used

        return RayEvaluator(model, tok, task, params, cfg)
    return local_evaluator(model, tok, task, params, cfg)


class ESTrainer(Trainer):
    """Full-rank or low-rank ES on one task (`cfg.es`), evaluated in-process or on Ray workers."""

    method = "es"

    def __init__(
        self, cfg: TrainConfig, resume: bool = False, progress: bool = True,
        evaluator_factory: EvaluatorFactory | None = None,
    ) -> None:
        super().__init__(cfg, resume, progress)
        self.evaluator_factory = evaluator_factory or make_evaluator

    @property
    def total_steps(self) -> int:
        return self.cfg.es.iterations

    def setup(self) -> None:
        m = self.cfg.model
        self.model, self.tok = load_model(m.name, m.dtype, m.device)
        self.task = build_task(self.cfg.task)
        self.params = make_params(self.model, self.cfg.es)
        self.evaluator = self.evaluator_factory(self.model, self.tok, self.task, self.params, self.cfg)

    def step(self, k: int) -> StepStats:
        es, seed = self.cfg.es, self.cfg.seed
        members = ask(seed, k, es.population, es.antithetic)
        batch = self.task.batch("train", es.prompts_per_iteration, seed, k)
        res = self.evaluator(members, batch, [self.task.render(e, self.tok) for e in batch])
        t0 = time.perf_counter()
        coeffs = tell(members, res.fitness, es.shaping)
        if coeffs is None:
            warnings.warn(f"iteration {k}: all {es.population} members have equal fitness; no update", stacklevel=2)
        else:
            self.params.apply_update(coeffs, es.alpha / es.population)
        self.row = {"step": k, "seeds": [m.seed for m in members], "signs": [m.sign for m in members],
                    "fitness": res.fitness, "updated": coeffs is not None,
                    "device": self.params.device_type}  # noise streams depend on the device type
        res.times["update"] = time.perf_counter() - t0
        res.extra["train/updated"] = int(coeffs is not None)
        return res

    def commit(self, k: int, stats: StepStats) -> None:
        append_jsonl(self.run.trajectory, {**self.row, "budget": vars(self.budget).copy()})

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        # a bf16/fp16 model cannot hold the fp32 master exactly
        lossy = any(p.dtype != torch.float32 for p in self.params.params.values())
        return {"checksum": self.params.checksum()}, (dict(self.params.master) if lossy else None)

    def restore(self) -> int:
        """Newest checkpoint at or before the last trajectory row, then replay the rows after it."""
        rows = read_trajectory(self.run.trajectory)
        rebuild(self.params, self.run.path, rows, self.cfg)
        # A kill may leave metrics/evals for an iteration whose trajectory row never landed.
        keep_rows(self.run.metrics, lambda r: r.get("step", 0) <= len(rows))
        self.budget = Budget(**rows[-1]["budget"]) if rows else Budget()
        return len(rows)

    def close(self) -> None:
        if hasattr(self.evaluator, "close"):
            self.evaluator.close()
