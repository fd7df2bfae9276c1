"""What every trainer does around its update rule: the run directory, budget, metrics, evals, summary.

ES and GRPO both subclass `Trainer`, so their run directories, eval files, metric names, budget
counters, checkpoint cadence and summaries are the same code. A subclass supplies `setup`
(model, task, method state), `resume` (bring the weights to the last committed step) and either
`step` (ES: the frame owns the loop) or its own loop that calls `after_step` (GRPO: TRL owns it).
"""

from __future__ import annotations

import os
import time
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from evotune.backends.models import resolve_device
from evotune.config import TrainConfig, load_run_config
from evotune.errors import ConfigError
from evotune.evaluation import evaluate
from evotune.runs.logger import MetricsLogger
from evotune.runs.metrics import Budget, StepStats
from evotune.runs.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl

BASE_EVAL = "iter_000000.jsonl"  # the starting model's held-out rows (the `correct_lost` reference)


def set_threads(threads: int | None) -> None:
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)


def open_run(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, RunDir]:
    """Create a new run directory, or reopen one for `--resume` (its stored config wins).

    A resumed run may only extend its length (iterations/steps/budget); any other difference
    from the stored config is an error rather than a silent change of experiment.
    """
    run = RunDir(cfg.run_dir)
    if resume:
        if not run.exists():
            raise ConfigError(f"--resume: {run.path} is not a run directory (no config.yaml)")
        stored = load_run_config(run.path).model_dump()
        given = cfg.model_dump()
        extendable = {("es", "iterations"), ("grpo", "steps"), ("budget", "completions"), ("budget", "tokens"),
                      # where it runs: the trajectory's recorded device type is checked on restore
                      ("model", "device"), ("es", "master_device"), ("es", "allow_device_change")}
        changed = [
            f"{sec}.{k}: {stored[sec].get(k)!r} -> {v!r}"
            for sec, val in given.items()
            if isinstance(val, dict) and sec != "ray"  # where members run never changes the weights
            for k, v in val.items()
            if stored[sec].get(k) != v and (sec, k) not in extendable
        ]
        changed += [
            f"{k}: {stored[k]!r} -> {v!r}"
            for k, v in given.items()
            if not isinstance(v, dict) and k not in ("run_dir", "threads") and stored[k] != v
        ]
        if changed:
            raise ConfigError("--resume cannot change a run's settings (only its length): " + "; ".join(changed))
    elif run.exists() and any(run.path.iterdir()):
        raise ConfigError(f"run directory {run.path} already holds a run: pass --resume or choose another --run-dir")
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, cfg.to_yaml())
    return cfg, run


def heldout_eval(
    cfg: TrainConfig, run: RunDir, logger: MetricsLogger, model: Any, tok: Any, task: Any, step: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Greedy held-out evaluation: rows to `evals/iter_K.jsonl`, summary to metrics as `eval/*`."""
    base_file = run.evals / BASE_EVAL
    base_rows = read_jsonl(base_file) if step > 0 and base_file.is_file() else None
    res = evaluate(
        model, tok, task, "eval", cfg.generation.max_new_tokens, cfg.generation.batch_size, cfg.eval.limit,
        base_rows=base_rows,
    )
    write_jsonl(run.evals / f"iter_{step:06d}.jsonl", res.rows)
    row: dict[str, Any] = {"step": step, **extra, **{f"eval/{k}": v for k, v in res.summary.items()}}
    for i, r in enumerate(res.rows[: cfg.eval.samples]):
        row[f"eval/sample_{i}"] = r["completion"][:300]
    logger.log(row, step)
    if res.summary.get("hacking"):
        warnings.warn(f"step {step}: possible reward hacking — {res.summary['hacking_reason']}", stacklevel=2)
    return res.summary


class Trainer(ABC):
    """One run of one method: owns the directory, the cadence of evals and checkpoints, the summary."""

    method: ClassVar[str]
    unit: ClassVar[str] = "it"

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.resume_run, self.progress = cfg, resume, progress
        self.budget = Budget()
        self.last_eval: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.steps_done = 0
        self.bar: Any = None

    # -- what a method supplies ------------------------------------------------------------------
    @property
    @abstractmethod
    def total_steps(self) -> int: ...

    @abstractmethod
    def setup(self) -> None:
        """Load model, tokenizer and task into `self.model`, `self.tok`, `self.task`; build method state."""

    @abstractmethod
    def restore(self) -> int:
        """Bring the weights and `self.budget` to the last committed step; return that step."""

    def step(self, k: int) -> StepStats:
        """One iteration (methods whose loop the frame owns)."""
        raise TypeError(f"{type(self).__name__} runs its own loop and calls after_step")

    def commit(self, k: int, stats: StepStats) -> None:  # noqa: B027  (optional hook)
        """Make step k durable before anything else is written about it (ES: the trajectory row)."""

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(state for evotune_state.json, extra tensors) of a checkpoint."""
        return {}, None

    def run_loop(self, start: int) -> None:
        for k in range(start + 1, self.total_steps + 1):
            if self.stop_reason:
                break
            t0 = time.perf_counter()
            stats = self.step(k)
            stats.times["iteration"] = time.perf_counter() - t0
            self.after_step(k, stats)

    # -- the frame ---------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        resolve_device(self.cfg.model.device)  # no GPU for --device cuda: fail before a run directory exists
        self.cfg, self.run = open_run(self.cfg, self.resume_run)
        set_threads(self.cfg.threads)
        self.setup()
        start = self.steps_done = self.restore()
        self.logger = MetricsLogger(self.run, start_step=start + 1)
        try:
            if start == 0 and not (self.run.evals / BASE_EVAL).exists():
                self.evaluate(0)
            self.stop_reason = self.budget.spent(self.cfg)
            if self.progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.total_steps, initial=start, desc=self.method.upper(), unit=self.unit,
                                dynamic_ncols=True)
            self.run_loop(start)
        finally:
            self.logger.close()
            if self.bar is not None:
                self.bar.close()
            self.close()
        return self.write_summary()

    def after_step(self, k: int, stats: StepStats) -> None:
        """Budget, commit, the shared metrics row, then held-out eval and checkpoint when due."""
        self.budget.add(stats)
        self.commit(k, stats)
        self.steps_done = k
        row = stats.row(k, self.budget)
        self.logger.log(row, k)
        self.stop_reason = self.budget.spent(self.cfg)
        final = k >= self.total_steps or self.stop_reason is not None
        if (self.cfg.eval.every and k % self.cfg.eval.every == 0) or final:
            self.last_eval = self.evaluate(k)
        if k % self.cfg.checkpoint_every == 0 or final:
            state, extra = self.checkpoint_state()
            self.run.save_checkpoint(
                k, self.model, self.tok, {"method": self.method, "budget": vars(self.budget).copy(), **state},
                extra_tensors=extra, keep_last=self.cfg.keep_checkpoints,
            )
        if self.bar is not None:
            ev = self.last_eval.get("reward_mean", float("nan"))
            self.bar.set_postfix({"reward": f"{row['train/reward_mean']:.3f}", "eval": f"{ev:.3f}"}, refresh=False)
            self.bar.update(1)

    def evaluate(self, k: int) -> dict[str, Any]:
        """Greedy held-out eval in eval mode (no dropout), then back to the model's mode."""
        was_training = self.model.training
        self.model.train(False)
        try:
            return heldout_eval(self.cfg, self.run, self.logger, self.model, self.tok, self.task, k,
                                self.budget.as_metrics())
        finally:
            self.model.train(was_training)

    def write_summary(self) -> dict[str, Any]:
        if not self.last_eval:  # nothing left to train (resumed after the end): report the last eval on file
            evals = [r for r in read_jsonl(self.run.metrics) if "eval/reward_mean" in r]
            self.last_eval = {k[5:]: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("eval/")}
        summary = {
            "method": self.method,
            "steps": self.steps_done,
            "stop_reason": self.stop_reason or f"{'iterations' if self.method == 'es' else 'steps'} done",
            **self.budget.as_metrics(),
            **{f"eval/{n}": v for n, v in self.last_eval.items()},
        }
        atomic_write_json(self.run.path / "summary.json", summary)
        return summary

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release method resources (e.g. Ray workers)."""
