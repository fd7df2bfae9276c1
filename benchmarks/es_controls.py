"""ES controls at one matched completion budget: the paper's update vs Adam-ES, group baseline, anchor decay, LoRA-ES.

    OMP_NUM_THREADS=1 python benchmarks/es_controls.py --out benchmarks/results/es_controls --seeds 0 1
    OMP_NUM_THREADS=1 python benchmarks/es_controls.py --out benchmarks/results/es_controls_lora \
        --runs /tmp/es_controls_runs --variants "paper (sgd)" lora --seeds 0 1

Every variant trains with the same task, seeds, population, prompts and iterations (so the same
number of training completions), one torch thread, and is evaluated greedily on the same held-out
items at iterations 0 and the last. Each run is a `python -m evotune train es` child under
`/usr/bin/time`, so wall time and peak RSS are its own. Writes `results.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

COMMON = {
    "es.population": 4, "es.prompts_per_iteration": 8, "es.iterations": 4, "es.sigma": 0.003,
    "es.alpha": 0.002, "eval.every": 0, "eval.limit": 30, "checkpoint_every": 4, "generation.max_new_tokens": 24,
}
VARIANTS: dict[str, dict[str, object]] = {
    "paper (sgd)": {},
    "adam": {"es.optimizer": "adam", "es.alpha": 0.001},
    "group baseline": {"es.baseline": "prompt_zscore"},
    "anchor decay": {"es.anchor_decay": 50.0},
    # rank-8 adapters (α_lora = 16) on all 7 projections; σ, α scaled for adapter weights (docs/algorithms.md)
    "lora": {"es.lora.enabled": True, "es.lora.rank": 8, "es.lora.alpha": 16.0, "es.sigma": 0.02, "es.alpha": 0.013},
}


def run_one(name: str, over: dict[str, object], seed: int, out: Path, runs: Path) -> dict[str, object]:
    run = runs / f"{name.split()[0]}-s{seed}"
    sets = [x for k, v in {**COMMON, **over}.items() for x in ("--set", f"{k}={v}")]
    timing = runs / f"{run.name}.time"
    cmd = ["/usr/bin/time", "-f", "%M %e", "-o", str(timing), sys.executable, "-m", "evotune", "train", "es",
           "--config", "configs/demo.yaml", "--run-dir", str(run), "--seed", str(seed), "--threads", "1",
           "--no-progress", *sets]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    rss_kb, wall = timing.read_text().split()[-2:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [
        {"step": r["step"], "completions": r.get("budget/completions", 0), "reward": r["eval/reward_mean"],
         "accuracy": r["eval/accuracy"]}
        for r in rows if "eval/reward_mean" in r
    ]
    return {"variant": name, "seed": seed, "wall_s": float(wall), "peak_rss_mb": int(rss_kb) / 1024, "evals": evals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/es_controls")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--runs", default=None, help="where the run directories go (default: --out)")
    args = ap.parse_args()
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        for name in args.variants:
            results.append(run_one(name, VARIANTS[name], seed, out, runs))
            (out / "results.json").write_text(json.dumps({"common": COMMON, "runs": results}, indent=1))
            r = results[-1]
            print(name, seed, r["wall_s"], round(r["peak_rss_mb"]), r["evals"], flush=True)
    print("| variant | seeds | held-out reward (0 → end) | accuracy (0 → end) | wall s | peak RSS MB |")
    for name in args.variants:
        rs = [r for r in results if r["variant"] == name]
        steps = len(rs[0]["evals"])
        rew = " → ".join(f"{statistics.fmean(r['evals'][i]['reward'] for r in rs):.1f}" for i in range(steps))
        acc = " → ".join(f"{statistics.fmean(r['evals'][i]['accuracy'] for r in rs):.3f}" for i in range(steps))
        print(f"| {name} | {len(rs)} | {rew} | {acc} | {statistics.fmean(r['wall_s'] for r in rs):.0f} | "
              f"{max(r['peak_rss_mb'] for r in rs):.0f} |")


if __name__ == "__main__":
    main()
