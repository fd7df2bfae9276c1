"""`--estimate` against a real run: the estimate of configs/demo.yaml (2 iterations), then that run, one thread each.

    OMP_NUM_THREADS=1 python benchmarks/estimate_check.py --out benchmarks/results/estimate --runs /tmp/estimate-runs

Each part runs as its own `python -m evotune` child under /usr/bin/time (peak RSS, wall). Writes
`results.json`: the estimate's numbers, the real run's per-iteration times, wall and peak RSS, and the
relative errors (estimate − real) / real.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SETS = ["--set", "es.iterations=2", "--threads", "1", "--report-to", "none", "--no-progress"]


def timed(cmd: list[str], timing: Path) -> tuple[str, float, float]:
    """(stdout, wall s, peak RSS MB) of a child process."""
    full = ["/usr/bin/time", "-f", "%M %e", "-o", str(timing), sys.executable, "-m", "evotune", *cmd]
    out = subprocess.run(full, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    rss_kb, wall = timing.read_text().split()[-2:]
    return out.stdout + out.stderr, float(wall), int(rss_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/estimate")
    ap.add_argument("--runs", default="/tmp/estimate-runs")
    args = ap.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    run = runs / "demo-2it"
    base = ["train", "es", "--config", "configs/demo.yaml", "--run-dir", str(run), *SETS]
    text, est_wall, est_rss = timed([*base, "--estimate"], runs / "estimate.time")
    est = json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])  # stderr holds library bars
    (out / "estimate.txt").write_text(text)
    text, wall, rss = timed(base, runs / "run.time")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    its = [r["time/iteration"] for r in rows if "time/iteration" in r]
    ckpt = max((run / "checkpoints").iterdir())
    real = {"iteration_s": its, "mean_iteration_s": statistics.fmean(its), "process_wall_s": wall, "peak_rss_mb": rss,
            "training_wall_s": rows[-1].get("time/wall"), "completions": max(r.get("budget/completions", 0) for r in rows),
            "checkpoint_mb": sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file()) / 2**20}
    err = {"iteration": (est["step_s"] - real["mean_iteration_s"]) / real["mean_iteration_s"],
           "run": (est["run_s"] - wall) / wall, "peak_rss": (est["peak_rss_mb"] - rss) / rss,
           "checkpoint": (est["checkpoint_mb"] - real["checkpoint_mb"]) / real["checkpoint_mb"]}
    res = {"command": base, "estimate": est, "estimate_process": {"wall_s": est_wall, "peak_rss_mb": est_rss},
           "real": real, "relative_error": err, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
