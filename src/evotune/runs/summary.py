"""Read run directories back: the facts `evotune runs` and the comparisons need."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from evotune.config import load_run_config
from evotune.errors import EvotuneError
from evotune.runs.layout import is_run
from evotune.runs.metrics import (
    BUDGET_COMPLETIONS,
    BUDGET_TOKENS,
    EVAL_ACCURACY,
    EVAL_REWARD_MEAN,
    STEP,
    TIME_WALL,
    is_eval_row,
)
from evotune.runs.rundir import RunDir


def run_facts(run: str | Path) -> dict[str, Any]:
    """Method, task, steps, budget spent and held-out reward (first, final, best) of one run."""
    run = Path(run)
    cfg = load_run_config(run)
    rows = RunDir(run).read_metrics()
    evals = [r for r in rows if is_eval_row(r)]
    steps = max((r.get(STEP, 0) for r in rows), default=0)
    last = rows[-1] if rows else {}
    return {
        "run": run.name,
        "path": str(run),
        "method": cfg.method,
        "task": cfg.task.name,
        "model": cfg.model.name,
        "steps": steps,
        "completions": int(last.get(BUDGET_COMPLETIONS, 0)),
        "tokens": int(last.get(BUDGET_TOKENS, 0)),
        "wall": float(last.get(TIME_WALL, 0.0)),
        "first_reward": evals[0][EVAL_REWARD_MEAN] if evals else None,
        "final_reward": evals[-1][EVAL_REWARD_MEAN] if evals else None,
        "best_reward": max(r[EVAL_REWARD_MEAN] for r in evals) if evals else None,
        "final_accuracy": evals[-1].get(EVAL_ACCURACY) if evals else None,
    }


def list_runs(directory: str | Path) -> list[dict[str, Any]]:
    """Every run directory directly below `directory` (or `directory` itself if it is a run)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    cands = [d] if is_run(d) else sorted(p for p in d.iterdir() if is_run(p))
    out = []
    for p in cands:
        try:
            out.append(run_facts(p))
        except EvotuneError as exc:  # one damaged run must not hide the others
            warnings.warn(f"{p}: skipped ({exc})", stacklevel=2)
    return out
