"""The ES trainer: one iteration of Evolution Strategies, top to bottom.

    members = ask(seed, k, N, σ_k)               # seeds only: noise is regenerated on demand
    fitness = evaluate(members, prompts)         # perturb, generate (greedy or seeded samples), score, restore
    centre  = evaluate(unperturbed, prompts)     # es.center_member: the weights themselves, logged
    coeffs  = tell(members, fitness, shaping)    # (per-prompt or centre baseline), z-score or centered rank
    θ       = optimizer(θ, clip(Σ coeffs_s · ε(s)), α_k)  # sgd: θ += (α/N)·Σ c ε, the paper; or momentum/Adam
    commit (seeds, fitness) to trajectory.jsonl  # replay and resume need nothing else; Ray replicas get the row

α_k and σ_k come from their schedules (`es/schedules.py`), pure functions of k; with es.noise_reuse
K the seeds of k are those of the first iteration of its block of K.

Everything around it (run directory, budget, metrics, evals, checkpoints, summary) is the shared
`Trainer` frame. Checkpoints are a cache: the weights of iteration k are a pure function of the
base model and the first k trajectory rows, which is how resume and `replay` rebuild them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evotune.backends.lora import save_lora
from evotune.backends.models import ARCH_PREFIX, load_model
from evotune.backends.resolve import resolve_model
from evotune.checkpoints import check_finite, checkpoint_dirs, read_state
from evotune.config import TrainConfig
from evotune.es import local_evaluator
from evotune.es.evaluator import (
    Checkpoint,
    Evaluator,
    EvaluatorFactory,
    Follower,
    PopulationResult,
    Row,
    SequentialEvaluator,
)
from evotune.es.params import EvolvingParams, make_params
from evotune.es.schedules import sigma_at
from evotune.es.strategy import ask, center
from evotune.es.trajectory import read_trajectory, rebuild, trajectory_row, with_noise_version
from evotune.es.update import update
from evotune.runs.metrics import TRAIN_STEP_NORM, TRAIN_STEP_RMS, Budget, StepStats
from evotune.runs.rundir import append_jsonl, keep_rows
from evotune.tasks import Task, build_task
from evotune.trainers.frame import Trainer


def make_evaluator(model: Any, tok: Any, task: Task, params: EvolvingParams, cfg: TrainConfig) -> Evaluator:
    """Ray workers when `cfg.ray` asks for them, else the in-process evaluator of `cfg.es.noise`."""
    if cfg.ray.enabled:
        from evotune.distributed import RayEvaluator  # Ray is heavy: imported only when used

        return RayEvaluator(model, tok, task, params, cfg)
    return local_evaluator(model, tok, task, params, cfg)


def write_lora(out: Path, model: Any, params: EvolvingParams, cfg: TrainConfig, merged: bool = False) -> None:
    """A LoRA-ES run's weights: the adapter (its exact fp32 master) and, when asked, the merged model.

    The adapter records the base model's resolved directory, from which evotune reads merged weights;
    a base without one (`arch:`, random weights) always gets the merged model written too.
    """
    spec = cfg.model.name
    on_disk = not spec.startswith(ARCH_PREFIX)
    base = str(Path(resolve_model(spec)).resolve()) if on_disk else spec
    # the whole adapter: evolving tensors from their fp32 master, any that es.include/exclude froze as initialised
    adapter = {n: p.detach() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    adapter.update(params.master)
    save_lora(out, model, adapter, cfg.es.lora, base, merged or cfg.es.lora.save_merged or not on_disk)


class ESTrainer(Trainer):
    """Full-rank or low-rank ES on one task (`cfg.es`), evaluated in-process or on Ray workers."""

    method = "es"
    length = "es.iterations"
    steps_name = "iterations"
    placement = ("es.master_device", "es.allow_device_change")

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
        # the noise version a resumed run recorded (else the newest), so its rows replay bit for bit
        self.cfg = with_noise_version(self.cfg, read_trajectory(self.run.trajectory))
        m = self.cfg.model
        self.task = build_task(self.cfg.task)  # a task that cannot be built fails before the model loads
        self.model, self.tok = load_model(m.name, m.dtype, m.device)
        self.params = make_params(self.model, self.cfg.es, self.cfg.seed)
        self.evaluator = self.evaluator_factory(self.model, self.tok, self.task, self.params, self.cfg)
        # the centre is scored in-process on the trainer's own weights, whichever evaluator scores members
        self.center_evaluator = SequentialEvaluator(self.model, self.tok, self.task, self.params, self.cfg)

    def step(self, k: int) -> StepStats:
        es, seed = self.cfg.es, self.cfg.seed
        members = ask(seed, k, es.population, es.antithetic, sigma_at(es, k), es.noise_reuse)
        batch = self.task.batch("train", es.prompts_per_iteration, seed, k)
        prompts = [self.task.render(e, self.tok) for e in batch]
        res = self.evaluator(members, batch, prompts)
        self.row = trajectory_row(k, members, res, self.params, es)
        if es.center_member:
            self.score_center(res, k, batch, prompts)
        # The update adds only its clip factor to the row: without a clip the row is final now, and
        # replicas (Ray) apply it while this process does.
        ahead = es.clip_update_norm is None
        if ahead:
            self.hand([self.row])
        t0 = time.perf_counter()
        info = update(self.params, members, self.row, self.cfg)
        if not ahead:
            self.hand([self.row])
        if info is None:
            warnings.warn(f"iteration {k}: all {es.population} members have equal fitness; no update", stacklevel=2)
        # Never commit an update that diverged: resume would replay it into the same NaN weights.
        check_finite(self.params.master.items(), f"iteration {k}: after the update (lower es.alpha)")
        self.row["updated"] = info is not None
        res.times["update"] = time.perf_counter() - t0
        res.extra["train/updated"] = int(info is not None)
        res.extra.update({TRAIN_STEP_NORM: info["step_norm"] if info else 0.0, TRAIN_STEP_RMS: info["step_rms"] if info else 0.0})
        if info is not None:
            res.extra.update({"es/grad_norm": info["grad_norm"], "es/clip_scale": info["clip_scale"],
                              "es/grad_norm_clipped": info["grad_norm"] * info["clip_scale"]})
        return res

    def score_center(self, res: PopulationResult, k: int, batch: list[Any], prompts: list[str]) -> None:
        """The unperturbed weights on the members' prompts and samples: a train-reward curve of the model
        itself (`train/center_reward`), recorded in the row (es.baseline=center uses it); its completions count."""
        c = self.center_evaluator([center(self.cfg.seed, k)], batch, prompts)
        self.row["center"] = c.fitness[0]
        res.extra.update({"train/center_reward": c.fitness[0], "train/center_accuracy": c.accuracy})
        res.completions += c.completions
        res.completion_tokens += c.completion_tokens
        res.prompt_tokens += c.prompt_tokens
        res.times["center"] = sum(c.times.values())

    def hand(self, rows: list[Row], checkpoint: Checkpoint | None = None) -> None:
        """Give an evaluator that keeps its own replicas of the weights (Ray) the rows (and newest
        checkpoint) that bring them to this process's; in-process evaluators share `self.params`."""
        if isinstance(self.evaluator, Follower):
            self.evaluator.follow(rows, checkpoint)

    def checkpoint_at(self, k: int) -> Checkpoint | None:
        """Checkpoint k as a replica loads it: (iteration, directory, recorded checksum); None if absent."""
        d = dict(checkpoint_dirs(self.run.path)).get(k)
        return None if d is None else (k, str(d.resolve()), read_state(d).get("checksum"))

    def save_checkpoint(self, k: int, path: Path | None = None, state: dict[str, Any] | None = None) -> None:
        super().save_checkpoint(k, path, state)
        if path is None:  # checkpoints/iter_k (not checkpoints/best): replacement replicas may start from it
            self.hand([], self.checkpoint_at(k))

    def commit(self, k: int, stats: StepStats) -> None:
        state = {"task_state": self.task_state} if self.task_state else {}  # e.g. the safety task's λ
        append_jsonl(self.run.trajectory, {**self.row, **state, "budget": vars(self.budget).copy()})

    def committed_task_states(self, start: int) -> list[dict[str, Any]]:
        return [r.get("task_state", {}) for r in read_trajectory(self.run.trajectory)[:start]]

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        # a bf16/fp16 model cannot hold the fp32 master exactly
        lossy = any(p.dtype != torch.float32 for p in self.params.params.values())
        return {"checksum": self.params.checksum()}, (dict(self.params.master) if lossy else None)

    def checkpoint_writer(self) -> Callable[[Path], None] | None:
        """LoRA-ES: the adapter (peft's format) and, with es.lora.save_merged, the merged model."""
        if not self.cfg.es.lora.enabled:
            return None
        return lambda out: write_lora(out, self.model, self.params, self.cfg)

    def optimizer_tensors(self) -> dict[str, Any] | None:
        return self.params.optimizer.state_tensors() if self.params.optimizer.stateful else None

    def rewind(self) -> int:
        """Newest checkpoint at or before the last trajectory row, then replay the rows after it."""
        rows = read_trajectory(self.run.trajectory)
        self.rows = rows
        done = rebuild(self.params, self.run.path, rows, self.cfg, repair=True)
        if rows:
            self.hand(rows, self.checkpoint_at(done) if done else None)
        # A kill may leave metrics/evals for an iteration whose trajectory row never landed.
        keep_rows(self.run.metrics, lambda r: r.get("step", 0) <= len(rows))
        self.budget = Budget(**rows[-1]["budget"]) if rows else Budget()
        return len(rows)

    def lost_row(self, k: int) -> dict[str, Any] | None:
        """A train row lost to a crash after its commit: rewards and budget from the trajectory row."""
        row = self.rows[k - 1]
        return {**StepStats(rewards=row["fitness"]).row(k, Budget(**row["budget"])), "recovered": True}

    def close(self) -> None:
        if hasattr(self.evaluator, "close"):
            self.evaluator.close()
