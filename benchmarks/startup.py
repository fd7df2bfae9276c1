"""Startup time of the CLI: `python -m evotune --help`, beside a bare `python -c pass`.

    python benchmarks/startup.py --out benchmarks/results/startup.json

Each repeat is a fresh child process. Wall time is what a user waits; CPU time (user + sys of the
child) is what the imports cost, and stays meaningful when other jobs share the cores. Target: the
CLI's own share (CPU, minus the bare interpreter) under 0.5 s; `tests/test_cli_help.py` keeps torch,
transformers, ray and trl out of every `--help`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5


def measure(cmd: list[str], repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of `cmd` over `repeats` fresh processes (one warm-up run first)."""
    subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "wall_min_s": min(walls), "cpu_min_s": min(cpus)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    bare = measure([sys.executable, "-c", "pass"], args.repeats)
    cli = measure([sys.executable, "-m", "evotune", "--help"], args.repeats)
    own = cli["cpu_s"] - bare["cpu_s"]
    result = {
        "command": "python -m evotune --help", "repeats": args.repeats, "cli": cli, "bare_python": bare,
        "cli_own_cpu_s": own, "target_s": TARGET_S, "meets_target": own < TARGET_S,
        "load_average_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
    }
    print(f"evotune --help: {cli['wall_s']:.3f} s wall, {cli['cpu_s']:.3f} s CPU (median of {args.repeats}); "
          f"bare python {bare['cpu_s']:.3f} s CPU; the CLI's own {own:.3f} s CPU (target < {TARGET_S} s); "
          f"load average {result['load_average_1m']:.1f} on {result['cpus']} cores")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
