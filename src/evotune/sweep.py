"""Hyper-parameter sweeps: a grid of runs × seeds that skips finished runs and resumes the rest.

Each cell is an ordinary run directory (`OUT/<cell>/seed<k>`), so anything that reads runs
(`evotune runs`, `compare`, `replay`) works on sweep output too. The summary is per cell, mean ±
std over seeds: held-out reward, accuracy, hacking rate and (optionally) KL to the base model —
the "safe band" picture of an α×σ (or β×lr) grid.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evotune.analysis.kl import kl_matrix
from evotune.analysis.settings import KLSettings
from evotune.config import TrainConfig, derive, load_run_config
from evotune.report import plots
from evotune.runs.layout import DONE, PARTIAL, run_state
from evotune.runs.metrics import BUDGET_COMPLETIONS, EVAL_ACCURACY, EVAL_REWARD_MEAN, STEP, is_eval_row
from evotune.runs.rundir import RunDir, atomic_write_json
from evotune.trainers import make_trainer


def train_run(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one cell with whichever method its config names."""
    return make_trainer(cfg, resume=resume, progress=progress).train()


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def cell_name(assign: dict[str, Any]) -> str:
    return "_".join(f"{k.split('.')[-1]}{_fmt(v)}" for k, v in assign.items())


def run_grid(
    base: TrainConfig,
    axes: dict[str, Sequence[Any]],
    seeds: Sequence[int],
    out: str | Path,
    progress: bool = True,
    trainer: Callable[[TrainConfig, bool, bool], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train every (cell, seed); finished runs are skipped, partial ones resumed. Returns run rows."""
    out = Path(out)
    rows = []
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        assign = dict(zip(keys, values, strict=True))
        for seed in seeds:
            run = out / cell_name(assign) / f"seed{seed}"
            cfg = derive(base, {**assign, "seed": seed, "run_dir": str(run)})
            state = run_state(run)
            if state != DONE:
                (trainer or train_run)(cfg, state == PARTIAL, progress)
            rows.append({"cell": cell_name(assign), **assign, "seed": seed, "run": str(run), **final_eval(run)})
    return rows


def final_eval(run: Path) -> dict[str, Any]:
    """Held-out numbers of a run's last evaluation (first one too, for the improvement)."""
    evals = [r for r in RunDir(run).read_metrics() if is_eval_row(r)]
    if not evals:
        return {}
    last, first = evals[-1], evals[0]
    return {
        "reward": last[EVAL_REWARD_MEAN],
        "reward_start": first[EVAL_REWARD_MEAN],
        "accuracy": last.get(EVAL_ACCURACY),
        "hacking": last.get("eval/hacking", 0.0),
        "hack_reason": last.get("eval/hacking_reason", ""),
        "steps": last.get(STEP),
        "completions": last.get(BUDGET_COMPLETIONS),
    }


def kl_to_base(run: Path, n_prompts: int = 8) -> float:
    """On-task per-token KL (exact, full vocabulary) of a run's final model to its base model."""

    res = kl_matrix([str(run)], load_run_config(run).model.name, settings=KLSettings(n_prompts=n_prompts, general=False))
    return float(res["summary"][res["models"][0]]["on_task"]["exact"]["mean"])


def summarize_cells(rows: Sequence[dict[str, Any]], axes: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per cell."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    out = []
    for name, rs in cells.items():
        row: dict[str, Any] = {"cell": name, **{a: rs[0][a] for a in axes}, "seeds": len(rs)}
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) is not None]
            if vals:
                row[f"{m}_mean"] = statistics.fmean(vals)
                row[f"{m}_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        out.append(row)
    return out


def heatmap(cells: Sequence[dict[str, Any]], x: str, y: str, metric: str, path: str | Path, title: str) -> None:
    """A y×x grid of `metric_mean` with ± std written in each cell."""
    xs, ys = sorted({c[x] for c in cells}), sorted({c[y] for c in cells})
    mean: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for c in cells:
        if f"{metric}_mean" in c:
            i, j = ys.index(c[y]), xs.index(c[x])
            mean[i][j] = c[f"{metric}_mean"]
            text[i][j] = f"{c[f'{metric}_mean']:.3g}\n±{c.get(f'{metric}_std', 0.0):.2g}"
    png = plots.heatmap(mean, [_fmt(v) for v in ys], [_fmt(v) for v in xs], title, cell_text=text, xlabel=x, ylabel=y)
    Path(path).write_bytes(png)


def sweep(
    base: TrainConfig, axes: dict[str, Sequence[Any]], seeds: Sequence[int], out: str | Path, progress: bool = True,
    kl: bool = False, trainer: Callable[[TrainConfig, bool, bool], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the grid and write `sweep.json` plus one heat-map per metric (2-D grids)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_grid(base, axes, seeds, out, progress, trainer)
    metrics = ["reward", "accuracy", "hacking"]
    if kl:
        for r in rows:
            r["kl"] = kl_to_base(Path(r["run"]))
        metrics.append("kl")
    cells = summarize_cells(rows, list(axes), metrics)
    result = {"axes": {k: list(v) for k, v in axes.items()}, "seeds": list(seeds), "runs": rows, "cells": cells}
    atomic_write_json(out / "sweep.json", result)
    names = list(axes)
    if len(names) == 2:
        for m in metrics:
            heatmap(cells, names[0], names[1], m, out / f"heatmap_{m}.png", f"held-out {m} (mean ± std over seeds)")
    return result
