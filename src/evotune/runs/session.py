"""What every trainer does around its loop: open the run, load model and task, evaluate, budget.

ES and GRPO both call these, so their run directories, eval files and metric names match.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from evotune.config import TrainConfig, load_run_config
from evotune.errors import ConfigError
from evotune.evaluation import evaluate
from evotune.runs.logger import MetricsLogger
from evotune.runs.rundir import RunDir, atomic_write_text, read_jsonl, write_jsonl


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
        extendable = {
            ("es", "iterations"),
            ("grpo", "steps"),
            ("budget", "completions"),
            ("budget", "tokens"),
        }
        changed = [
            f"{sec}.{k}: {stored[sec].get(k)!r} -> {v!r}"
            for sec, val in given.items()
            if isinstance(val, dict)
            for k, v in val.items()
            if stored[sec].get(k) != v and (sec, k) not in extendable
        ]
        changed += [
            f"{k}: {stored[k]!r} -> {v!r}"
            for k, v in given.items()
            if not isinstance(v, dict) and k not in ("run_dir", "threads") and stored[k] != v
        ]
        if changed:
            raise ConfigError(
                "--resume cannot change a run's settings (only its length): " + "; ".join(changed)
            )
    elif run.exists() and any(run.path.iterdir()):
        raise ConfigError(
            f"run directory {run.path} already holds a run: pass --resume or choose another --run-dir"
        )
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, cfg.to_yaml())
    return cfg, run


@dataclass
class Budget:
    """Counters every run logs, and the stopping rule of `--budget`."""

    completions: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    wall: float = 0.0

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


def heldout_eval(
    cfg: TrainConfig,
    run: RunDir,
    logger: MetricsLogger,
    model: Any,
    tok: Any,
    task: Any,
    step: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Greedy held-out evaluation: rows to `evals/iter_K.jsonl`, summary to metrics as `eval/*`."""
    mnt = cfg.generation.max_new_tokens or task.default_max_new_tokens
    base_file = run.evals / "iter_000000.jsonl"  # the starting model, item by item (`correct_lost`)
    base_rows = read_jsonl(base_file) if step > 0 and base_file.is_file() else None
    res = evaluate(model, tok, task, "eval", mnt, cfg.generation.batch_size, cfg.eval.limit, base_rows=base_rows)
    write_jsonl(run.evals / f"iter_{step:06d}.jsonl", res.rows)
    row: dict[str, Any] = {"step": step, **extra, **{f"eval/{k}": v for k, v in res.summary.items()}}
    for i, r in enumerate(res.rows[: cfg.eval.samples]):
        row[f"eval/sample_{i}"] = r["completion"][:300]
    logger.log(row, step)
    if res.summary.get("hacking"):
        warnings.warn(f"step {step}: possible reward hacking — {res.summary['hacking_reason']}", stacklevel=2)
    return res.summary
