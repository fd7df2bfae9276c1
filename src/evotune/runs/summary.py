"""Read run directories back: the facts `evotune runs` and the comparisons need."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from evotune.config import load_run_config
from evotune.errors import EvotuneError
from evotune.runs.rundir import read_jsonl


def run_facts(run: str | Path) -> dict[str, Any]:
    """Method, task, steps, budget spent and held-out reward (first, final, best) of one run."""
    run = Path(run)
    cfg = load_run_config(run)
    rows = read_jsonl(run / "metrics.jsonl", skip_corrupt=True)
    evals = [r for r in rows if "eval/reward_mean" in r]
    steps = max((r.get("step", 0) for r in rows), default=0)
    last = rows[-1] if rows else {}
    return {
        "run": run.name,
        "path": str(run),
        "method": cfg.method,
        "task": cfg.task.name,
        "model": cfg.model.name,
        "steps": steps,
        "completions": int(last.get("budget/completions", 0)),
        "tokens": int(last.get("budget/tokens", 0)),
        "wall": float(last.get("time/wall", 0.0)),
        "first_reward": evals[0]["eval/reward_mean"] if evals else None,
        "final_reward": evals[-1]["eval/reward_mean"] if evals else None,
        "best_reward": max(r["eval/reward_mean"] for r in evals) if evals else None,
        "final_accuracy": evals[-1].get("eval/accuracy") if evals else None,
    }


def list_runs(directory: str | Path) -> list[dict[str, Any]]:
    """Every run directory directly below `directory` (or `directory` itself if it is a run)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    cands = (
        [d]
        if (d / "config.yaml").is_file()
        else sorted(p for p in d.iterdir() if (p / "config.yaml").is_file())
    )
    out = []
    for p in cands:
        try:
            out.append(run_facts(p))
        except EvotuneError as exc:  # one damaged run must not hide the others
            warnings.warn(f"{p}: skipped ({exc})", stacklevel=2)
    return out
