"""Issue 28 item 8: measured α/σ/N starting points for the embedded model, and how they scale.

    OMP_NUM_THREADS=1 python benchmarks/es_grid.py --out benchmarks/results/es_grid --seeds 0 1 2 \
        --reuse studies_out/es_ablation_runs
    python benchmarks/es_grid.py --tiny --out /tmp/grid --seeds 0 1 --cells a0.002_s0.003_n8 null  # smoke

The cells train `benchmarks/es_ablation.py`'s setup (configs/demo.yaml's conciseness task on SmolLM2-135M,
6 iterations, 8 prompts per member, 60 held-out items) with the paper's update, changing only α, σ, N:

- an α × σ slice at N = 8: α ∈ {5e-4, 2e-3, 8e-3} × σ ∈ {1e-3, 3e-3, 1e-2};
- an N slice at σ = 3e-3: N ∈ {4, 16} at the centre's α = 2e-3 (the step RMS α/√N changes with N) and at
  α = 2e-3·√(N/8) (the step RMS kept);
- `null`: the centre cell with `es.null_control` (fitness permuted each iteration): what a run that learned
  nothing measures at that step size.

Per cell and seed the held-out gain is final − base reward (the base model's greedy reward is the same for
every seed). The table gives its mean with a Student-t 95% interval over seeds (df = seeds − 1, Bonferroni
over the cells: the starting points are picked among them; `evotune.stats`) and the verdict against
`--margin`: "improves" / "hurts" when the interval clears 0, "underpowered" (seeds needed) when it reaches
past ±margin on both sides, "no change" inside ±margin, else inconclusive. It also gives the share of hacked
held-out answers (`eval/hacking`), the unique-answer share (collapse) and the step norm α·‖ĝ‖ per iteration.
The centre cell is the ablation's `paper` variant: `--reuse DIR` takes its finished runs from there.
Writes `results.json`, `table.md`, `alpha_sigma.png` (the α × σ slice) and `runs.jsonl` (each run's line as it
finishes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

from evotune import stats

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("es_ablation", HERE / "es_ablation.py")
assert _spec is not None and _spec.loader is not None
abl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(abl)

CENTRE = {"es.alpha": 2e-3, "es.sigma": 3e-3, "es.population": 8}


def _name(alpha: float, sigma: float, n: int) -> str:
    return f"a{alpha:g}_s{sigma:g}_n{n}"


def cells(scale: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Every cell's overrides, in the order they are trained (most informative first). `scale` (tiny
    runs) multiplies α and σ so a random model moves at all."""
    k = scale or {"es.alpha": 1.0, "es.sigma": 1.0}
    out: dict[str, dict[str, Any]] = {}

    def add(alpha: float, sigma: float, n: int, **extra: Any) -> None:
        name = _name(alpha, sigma, n) if not extra else "null"
        out[name] = {"es.alpha": alpha * k["es.alpha"], "es.sigma": sigma * k["es.sigma"], "es.population": n, **extra}

    for sigma in (3e-3, 1e-3, 1e-2):
        for alpha in (2e-3, 5e-4, 8e-3):
            add(alpha, sigma, 8)
    add(2e-3, 3e-3, 8, **{"es.null_control": True})
    for n in (4, 16):
        add(2e-3, 3e-3, n)
        add(round(2e-3 * math.sqrt(n / 8), 6), 3e-3, n)
    return out


def train(cell: str, over: dict[str, Any], seed: int, setup: dict[str, Any], runs: Path, model: str | None,
          reuse: Path | None) -> dict[str, Any]:
    """Train (or reuse) one cell's run for one seed; its held-out numbers, hacking and step norms."""
    run = runs / f"{cell}-s{seed}"
    if reuse is not None and over == CENTRE and (reuse / f"paper-s{seed}" / "summary.json").is_file():
        run = reuse / f"paper-s{seed}"  # the ablation's paper variant is this grid's centre cell
    cfg, summary, rows, wall = abl.train_or_reuse(run, over, seed, setup, model)
    evals = [r for r in rows if "eval/reward_mean" in r]
    steps = [r for r in rows if "es/grad_norm" in r]
    train_r = [r["train/reward_mean"] for r in rows if "train/reward_mean" in r]
    return {"cell": cell, "seed": seed, **{k.split(".")[1]: v for k, v in over.items()}, "run": str(run),
            "wall_s": wall, "completions": summary["budget/completions"],
            "reward_0": evals[0]["eval/reward_mean"], "reward": evals[-1]["eval/reward_mean"],
            "gain": evals[-1]["eval/reward_mean"] - evals[0]["eval/reward_mean"],
            "accuracy": evals[-1]["eval/accuracy"], "hacking": evals[-1].get("eval/hacking"),
            "unique_share": evals[-1].get("eval/collapse_unique_share"),
            "train_reward_first": train_r[0] if train_r else None, "train_reward_last": train_r[-1] if train_r else None,
            "step_norm": stats.mean_std([cfg.es.alpha * r["es/grad_norm"] for r in steps])[0] if steps else None}


def row(cell: str, results: list[dict[str, Any]], margin: float, correction: int) -> dict[str, Any]:
    mine = sorted((r for r in results if r["cell"] == cell), key=lambda r: r["seed"])
    out: dict[str, Any] = {"cell": cell, "seeds": [r["seed"] for r in mine], "gain": [r["gain"] for r in mine],
                           "hacking": _mean([r["hacking"] for r in mine]),
                           "unique_share": _mean([r["unique_share"] for r in mine]),
                           "step_norm": _mean([r["step_norm"] for r in mine])}
    for k in ("alpha", "sigma", "population", "null_control"):
        if mine and k in mine[0]:
            out[k] = mine[0][k]
    if len(mine) >= 2:
        iv = stats.t_interval(out["gain"], correction=correction, unit="seeds")
        r = stats.read(iv, 0.0, margin)
        verdict = {stats.HOLDS: "improves", stats.FAILS: "hurts"}.get(r.verdict, r.verdict)
        if r.verdict == stats.UNSURE and stats.read_equivalence(iv, margin).verdict == stats.HOLDS:
            verdict = "no change"
        out.update(mean=iv.mean, lo=iv.lo if iv.defined else None, hi=iv.hi if iv.defined else None, kind=iv.kind,
                   verdict=verdict, needed_seeds=r.needed, needed_seeds_80=r.needed_80)
    return out


def versus_null(results: list[dict[str, Any]], centre: str, margin: float) -> dict[str, Any] | None:
    """The centre's gain minus the null control's, paired by seed (same seeds, α, σ, N: only the signal differs).

    What a run that learned nothing shows: a gain of the centre cell that the null matches is the step's,
    not the task's.
    """
    a = {r["seed"]: r["gain"] for r in results if r["cell"] == centre}
    b = {r["seed"]: r["gain"] for r in results if r["cell"] == "null"}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    iv = stats.paired_interval([a[s] for s in seeds], [b[s] for s in seeds], unit="seeds")
    r = stats.read(iv, 0.0, margin)
    return {"seeds": seeds, "mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "kind": iv.kind,
            "verdict": {stats.HOLDS: "learns more than the null", stats.FAILS: "learns less than the null"}.get(
                r.verdict, r.verdict), "needed_seeds": r.needed, "needed_seeds_80": r.needed_80}


def _null_line(v: dict[str, Any] | None) -> str:
    if v is None:
        return ""
    need = needed_text(v)
    return (f"\nCentre cell − null control, paired by seed: {v['mean']:+.2f} [{v['lo']:+.2f}, {v['hi']:+.2f}]; "
            f"{v['kind']} — {v['verdict']}{need}.\n")


def needed_text(row: dict[str, Any]) -> str:
    """Seeds for a half-width ≤ the margin (a precision target) and for 80% power at one margin, SD from these seeds."""
    if not row.get("needed_seeds"):
        return ""
    power = f", ~{row['needed_seeds_80']} for 80% power" if row.get("needed_seeds_80") else ""
    return f" (~{row['needed_seeds']} seeds for a half-width ≤ margin{power})"


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return math.fsum(vals) / len(vals) if vals else None


def markdown(rows: list[dict[str, Any]], margin: float) -> str:
    def f(x: float | None, fmt: str = "+.2f") -> str:
        return "—" if x is None else format(x, fmt)

    lines = [f"| cell | α | σ | N | held-out gain per seed | gain (mean [interval]; kind) | verdict (margin {margin}) "
             "| hacking flagged (share of seeds) | unique answers | step norm α‖ĝ‖ |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{x:+.2f}" for x in r["gain"])
        gain = "—" if "mean" not in r else f"{f(r['mean'])} [{f(r['lo'])}, {f(r['hi'])}]; {r['kind']}"
        need = needed_text(r)
        lines.append(f"| {r['cell']} | {r.get('alpha', '—'):g} | {r.get('sigma', '—'):g} | {r.get('population', '—')} "
                     f"| {per} | {gain} | {r.get('verdict', '—')}{need} | {f(r['hacking'], '.2f')} "
                     f"| {f(r['unique_share'], '.2f')} | {f(r['step_norm'], '.2f')} |")
    return "\n".join(lines) + "\n"


def heatmap_png(rows: list[dict[str, Any]]) -> bytes | None:
    """The α × σ slice at N = 8 as a heat map of the mean held-out gain (cell text: mean and verdict)."""
    from evotune.report.plots import heatmap

    slice_ = {(r["alpha"], r["sigma"]): r for r in rows
              if r.get("population") == CENTRE["es.population"] and not r.get("null_control") and "mean" in r}
    if not slice_:
        return None
    alphas, sigmas = sorted({a for a, _ in slice_}), sorted({s for _, s in slice_})
    cell = [[slice_.get((a, s)) for s in sigmas] for a in alphas]
    return heatmap([[c["mean"] if c else None for c in line] for line in cell], [f"α={a:g}" for a in alphas],
                   [f"σ={s:g}" for s in sigmas], "held-out gain over the base model, N = 8 (mean over seeds)",
                   cmap="RdBu", cell_text=[[f"{c['mean']:+.1f}\n{c['verdict']}" if c else "" for c in line] for line in cell],
                   xlabel="σ", ylabel="α")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/es_grid")
    ap.add_argument("--runs", default=None, help="where the run directories go (default: OUT/runs)")
    ap.add_argument("--reuse", default=None, help="the ablation's run directories: its paper-s* runs are the centre cell")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cells", nargs="+", default=None, help="train only these cells (default: all); the table uses every "
                    "cell found in OUT/runs.jsonl")
    ap.add_argument("--table-only", action="store_true", help="train nothing: the table from OUT/runs.jsonl as it is")
    ap.add_argument("--margin", type=float, default=3.0, help="the smallest held-out reward gain that matters")
    ap.add_argument("--tiny", action="store_true", help="a random tiny model and minute settings: checks the script only")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs) if args.runs else out / "runs"
    setup, model = (abl.TINY, None) if args.tiny else (abl.SMOLLM2, None)
    grid = cells({"es.alpha": 10.0, "es.sigma": 16.0} if args.tiny else None)
    if args.tiny:
        from evotune.backends.models import make_tiny

        model = str(make_tiny(out / "tiny-model", seed=0))
    unknown = set(args.cells or []) - set(grid)
    if unknown:
        ap.error(f"unknown cells {sorted(unknown)}; choose from {list(grid)}")
    log = out / "runs.jsonl"
    if args.table_only and not log.is_file():
        ap.error(f"--table-only: no runs yet ({log} does not exist)")
    for cell in [] if args.table_only else args.cells or grid:  # a cell's seeds together: a cut-short run leaves whole cells
        for seed in args.seeds:
            res = train(cell, grid[cell], seed, setup, runs, model, Path(args.reuse) if args.reuse else None)
            with log.open("a") as fh:
                fh.write(json.dumps(res) + "\n")
            print(json.dumps(res), flush=True)
    latest = {(r["cell"], r["seed"]): r for r in map(json.loads, log.read_text().splitlines()) if r["cell"] in grid}
    results = list(latest.values())
    present = [c for c in grid if any(r["cell"] == c for r in results)]
    rows = [row(c, results, args.margin, max(len(present), 1)) for c in present]
    vs_null = versus_null(results, _name(CENTRE["es.alpha"], CENTRE["es.sigma"], CENTRE["es.population"]), args.margin)
    given = sys.argv[1:] if argv is None else argv
    old = json.loads((out / "results.json").read_text()) if args.table_only and (out / "results.json").is_file() else {}
    made = {"argv": old["argv"], "table_argv": given} if old.get("argv") else {"argv": given}  # the training command stays
    abl.write(out, {**made, "common": setup["common"], "margin": args.margin,
                    "cells": {c: grid[c] for c in present}, "runs": results, "table": rows, "centre_vs_null": vs_null},
              markdown(rows, args.margin) + _null_line(vs_null))
    png = heatmap_png(rows)
    if png is not None:
        (out / "alpha_sigma.png").write_bytes(png)
    return rows


if __name__ == "__main__":
    main()
