"""Issue 28's ablation: the paper's update vs each of clipping, centre baseline, sampled fitness and noise
reuse, their combination, and RandOpt at the same number of training completions; paired by seed.

    OMP_NUM_THREADS=1 python benchmarks/es_ablation.py --out benchmarks/results/es_ablation --seeds 0 1 2
    python benchmarks/es_ablation.py --tiny --out /tmp/abl --seeds 0 1 2 --variants paper clip randopt  # smoke

Every ES variant trains `configs/demo.yaml`'s task and model with the same population, iterations and
training completions per iteration (sampled fitness with k samples scores P/k prompts, so k·P/k = P
completions per member; the centre member adds one member's completions, 1/N more, reported in the table).
RandOpt scores N·T members (T = iterations) on P prompts: the same N·T·P completions as the paper's run.
Each run is an ordinary run directory (`--runs`), trained in this process, evaluated greedily on the
same held-out items at the start and the end; finished runs are reused when the script is rerun.

Per variant and seed the final held-out reward minus the paper's on the same seed is a paired
difference; the table gives its mean with a Student-t 95% interval (df = seeds − 1, Bonferroni over the
variants compared with the paper: the verdicts pick among them; `evotune.stats`) and a verdict:
better / worse (the interval excludes 0), "underpowered" (with the seeds needed) when it reaches past
±`--margin` (the smallest effect that matters) on both sides of 0, equivalent (inside ±margin), else
inconclusive.
Writes `results.json` (config, per-seed numbers, table rows) and `table.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from evotune import stats

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = {  # configs/demo.yaml's task and model, at the es_controls budget
    "config": ROOT / "configs" / "demo.yaml",
    "common": {"es.population": 8, "es.prompts_per_iteration": 8, "es.iterations": 6, "es.sigma": 0.003,
               "es.alpha": 0.002, "eval.every": 0, "eval.limit": 60, "checkpoint_every": 6,
               "generation.max_new_tokens": 24, "threads": 1},
    # ‖ĝ‖ of z-scored fitness ≈ √(d/N) = √(134.5 M / 8) ≈ 4100 on SmolLM2-135M: clip at ~3/4 of it
    "clip": 3000.0,
}
TINY = {
    "config": None,
    "common": {"task.name": "conciseness", "task.n_train": 40, "task.n_eval": 8, "es.population": 2,
               "es.prompts_per_iteration": 2, "es.iterations": 2, "es.sigma": 0.05, "es.alpha": 0.02,
               "eval.every": 0, "eval.limit": 2, "checkpoint_every": 2, "generation.max_new_tokens": 4,
               "threads": 1, "report_to": []},
    "clip": 1.0,
}
FEATURES = ["clip", "center", "sampled", "reuse"]
VARIANTS = ["paper", *FEATURES, "combined", "randopt"]


def feature(name: str, setup: dict[str, Any]) -> dict[str, Any]:
    """The config change of one feature (sampled fitness keeps completions per member: k samples of P/k prompts)."""
    p = setup["common"]["es.prompts_per_iteration"]
    return {
        "clip": {"es.clip_update_norm": setup["clip"]},
        "center": {"es.center_member": True, "es.baseline": "center"},
        "sampled": {"es.samples_per_prompt": 2, "es.temperature": 0.7, "es.prompts_per_iteration": max(1, p // 2)},
        "reuse": {"es.noise_reuse": 2},
    }[name]


def overrides(variant: str, setup: dict[str, Any], combo: list[str]) -> dict[str, Any]:
    c = setup["common"]
    if variant == "paper":
        return {}
    if variant == "combined":
        return {k: v for f in combo for k, v in feature(f, setup).items()}
    if variant == "randopt":  # N·T members on P prompts: the paper's N·T·P completions, no update
        n = c["es.population"] * c["es.iterations"]
        return {"method": "randopt", "es.population": n, "randopt.top_k": min(4, n),
                "randopt.members_per_step": c["es.population"]}
    return feature(variant, setup)


def train_or_reuse(run: Path, over: dict[str, Any], seed: int, setup: dict[str, Any], model: str | None,
                   ) -> tuple[Any, dict[str, Any], list[dict[str, Any]], float | None]:
    """(config, summary, metrics rows, wall seconds or None) of the run at `run`: trained here unless it finished."""
    from evotune.config import build_config
    from evotune.runs.rundir import read_jsonl
    from evotune.trainers import make_trainer

    cfg = build_config(setup["config"], {**setup["common"], **over, "run_dir": str(run), "seed": seed,
                                         **({"model.name": model} if model else {})})
    t0 = time.perf_counter()
    done = (run / "summary.json").is_file()
    summary = json.loads((run / "summary.json").read_text()) if done else make_trainer(cfg, progress=False).train()
    return cfg, summary, read_jsonl(run / "metrics.jsonl"), None if done else time.perf_counter() - t0


def train(variant: str, seed: int, setup: dict[str, Any], combo: list[str], runs: Path, model: str | None) -> dict[str, Any]:
    _, summary, rows, wall = train_or_reuse(runs / f"{variant}-s{seed}", overrides(variant, setup, combo), seed,
                                            setup, model)
    evals = [r for r in rows if "eval/reward_mean" in r]
    out = {"variant": variant, "seed": seed, "wall_s": wall,
           "completions": summary["budget/completions"], "reward_0": evals[0]["eval/reward_mean"],
           "reward": evals[-1]["eval/reward_mean"], "accuracy": evals[-1]["eval/accuracy"]}
    if "vote/reward_mean" in summary:
        out.update(vote_reward=summary["vote/reward_mean"], vote_accuracy=summary["vote/accuracy"])
    return out


def paired(diffs: list[float], margin: float, correction: int = 1) -> dict[str, Any]:
    """Mean paired difference with its Student-t interval (df = n − 1, Bonferroni over `correction`
    comparisons with the paper) and the verdict against `margin`, by `evotune.stats`' reading."""
    iv = stats.t_interval(diffs, correction=correction, unit="seeds")
    r = stats.read(iv, 0.0, margin)
    verdict = {stats.HOLDS: "better", stats.FAILS: "worse"}.get(r.verdict, r.verdict)
    if r.verdict == stats.UNSURE and stats.read_equivalence(iv, margin).verdict == stats.HOLDS:
        verdict = "equivalent"
    lo, hi = (iv.lo, iv.hi) if iv.defined else (None, None)
    return {"n": iv.n, "mean": iv.mean, "lo": lo, "hi": hi, "half": iv.half if iv.defined else None,
            "kind": iv.kind, "verdict": verdict, "needed_seeds": r.needed, "needed_seeds_80": r.needed_80}


def table(results: list[dict[str, Any]], variants: list[str], margin: float, key: str = "reward") -> list[dict[str, Any]]:
    """One row per variant: per-seed final rewards, and the paired difference to the paper's run of the same seed."""
    paper = {r["seed"]: r[key] for r in results if r["variant"] == "paper"}
    # every variant is compared with the paper's update: the verdicts pick among them, so Bonferroni
    m = sum(v != "paper" for v in variants) + ("randopt" in variants and any("vote_reward" in r for r in results))
    rows = []
    for v in variants:
        mine = {r["seed"]: r for r in results if r["variant"] == v}
        seeds = sorted(s for s in mine if s in paper)
        row: dict[str, Any] = {"variant": v, "seeds": seeds, "reward": [mine[s][key] for s in seeds],
                               "completions": [mine[s]["completions"] for s in seeds]}
        if v != "paper" and seeds:
            row.update(paired([mine[s][key] - paper[s] for s in seeds], margin, max(m, 1)))
        rows.append(row)
        if v == "randopt" and seeds and "vote_reward" in mine[seeds[0]]:
            vote = {"variant": "randopt vote", "seeds": seeds, "reward": [mine[s]["vote_reward"] for s in seeds],
                    "completions": row["completions"]}
            vote.update(paired([mine[s]["vote_reward"] - paper[s] for s in seeds], margin, max(m, 1)))
            rows.append(vote)
    return rows


def _needed(row: dict[str, Any]) -> str:
    """Seeds for a half-width ≤ the margin (a precision target) and for 80% power at one margin, SD from these seeds."""
    if not row.get("needed_seeds"):
        return ""
    power = f", ~{row['needed_seeds_80']} for 80% power" if row.get("needed_seeds_80") else ""
    return f" (~{row['needed_seeds']} seeds for a half-width ≤ margin{power})"


def markdown(rows: list[dict[str, Any]], margin: float) -> str:
    def f(x: float | None) -> str:
        return "—" if x is None else f"{x:+.2f}"

    lines = [f"| variant | final held-out reward per seed | completions | Δ vs paper (mean [interval]; kind) | verdict (margin {margin}) |",
             "|---|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{x:.2f}" for x in r["reward"])
        delta = "—" if "mean" not in r else f"{f(r['mean'])} [{f(r['lo'])}, {f(r['hi'])}]; {r['kind']}"
        lines.append(f"| {r['variant']} | {per} | {max(r['completions'], default=0)} | {delta} | {r.get('verdict', '—')}{_needed(r)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/es_ablation")
    ap.add_argument("--runs", default=None, help="where the run directories go (default: OUT/runs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--combo", nargs="+", default=FEATURES, choices=FEATURES, help="features the combined variant turns on")
    ap.add_argument("--margin", type=float, default=3.0, help="the smallest held-out reward difference that matters")
    ap.add_argument("--tiny", action="store_true", help="a random tiny model and minute settings: checks the script only")
    ap.add_argument("--table-only", action="store_true", help="train nothing: the table again from OUT/results.json's runs")
    args = ap.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    if args.table_only:
        saved = Path(args.out) / "results.json"
        if not saved.is_file():
            ap.error(f"--table-only: no runs yet ({saved} does not exist)")
        old = json.loads(saved.read_text())
        seen = list(dict.fromkeys(r["variant"] for r in old["runs"]))
        rows = table(old["runs"], ["paper", *[v for v in seen if v != "paper"]], args.margin)
        write(Path(args.out), {**old, "table_argv": given, "margin": args.margin, "table": rows}, markdown(rows, args.margin))
        return rows
    if len(args.seeds) < 2:
        ap.error("paired intervals need at least 2 seeds (the issue asks for 3)")
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    setup, model = (TINY, None) if args.tiny else (SMOLLM2, None)
    if args.tiny:
        from evotune.backends.models import make_tiny

        model = str(make_tiny(out / "tiny-model", seed=0))
    variants = ["paper", *[v for v in args.variants if v != "paper"]]
    results = []
    for seed in args.seeds:
        for v in variants:
            results.append(train(v, seed, setup, args.combo, runs, model))
            print(json.dumps(results[-1]), flush=True)
    rows = table(results, variants, args.margin)
    write(out, {"argv": given, "common": setup["common"], "clip": setup["clip"],
                "combo": args.combo, "margin": args.margin, "runs": results, "table": rows}, markdown(rows, args.margin))
    return rows


def write(out: Path, results: dict[str, Any], md: str) -> None:
    """OUT/results.json (settings, per-seed runs, table rows) and OUT/table.md, which is also printed."""
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "table.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
