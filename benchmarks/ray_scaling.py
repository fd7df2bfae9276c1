"""ES iteration time: 1 in-process worker × T threads vs W Ray workers × T/W threads, and bytes on the wire.

Runs the same short ES run twice through `ESTrainer` (in-process, then with `--workers W`), reports
per-iteration wall time from metrics.jsonl, the Ray bytes per iteration, the one-off start-up
(kept out of the iteration times), and whether both runs ended with bit-identical weights.

    python benchmarks/ray_scaling.py --model smollm2-135m --population 4 --prompts 4 \\
        --max-new-tokens 16 --iterations 2 --out /tmp/ray_scaling.json

Prints a table and the JSON (also written to --out). Small settings: each SmolLM2 replica holds
~1.1 GB (model + fp32 master), and full-rank noise costs ~2 s per member on one core. On a machine
shared with other jobs, run it with OMP_WAIT_POLICY=PASSIVE: OpenMP's spin-waiting otherwise makes
the multi-threaded in-process side several times slower (docs/scaling.md). Exits 1 if the two runs
do not end with bit-identical weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from evotune.checkpoints import latest_checkpoint, read_state
from evotune.config import RayConfig, build_config
from evotune.distributed import RayEvaluator, start_local_ray
from evotune.distributed.session import available_cores
from evotune.runs.rundir import read_jsonl
from evotune.trainers import ESTrainer


def _config(args: argparse.Namespace, run_dir: Path) -> Any:
    return build_config(
        None,
        {
            "run_dir": str(run_dir),
            "model.name": args.model,
            "task.name": args.task,
            "es.population": args.population,
            "es.iterations": args.iterations,
            "es.prompts_per_iteration": args.prompts,
            "es.noise": args.noise,
            "es.sigma": 1e-3,
            "es.alpha": 5e-4,
            "generation.max_new_tokens": args.max_new_tokens,
            "generation.batch_size": args.batch_size,
            "eval.every": 0,
            "eval.limit": 2,  # held-out evals at start/end are not timed, keep them short
            "checkpoint_every": 10_000,
            "threads": args.threads,
        },
    )


def _summarise(run_dir: Path) -> dict[str, Any]:
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "time/iteration" in r]
    times = [r["time/iteration"] for r in rows]
    out: dict[str, Any] = {
        "iteration_s": times,
        "mean_iteration_s": statistics.fmean(times),
        "update_s": [r["time/update"] for r in rows],
        "fitness": [r["fitness"] for r in read_jsonl(run_dir / "trajectory.jsonl")],
        "checksum": read_state(latest_checkpoint(run_dir))["checksum"],
    }
    if rows and "ray/bytes_per_iteration" in rows[0]:
        out["bytes_per_iteration"] = [int(r["ray/bytes_per_iteration"]) for r in rows]
        out["bytes_to_workers"] = [int(r["ray/bytes_to_workers"]) for r in rows]
        out["bytes_from_workers"] = [int(r["ray/bytes_from_workers"]) for r in rows]
        out["worker_seconds_generate"] = [r["time/generate"] for r in rows]
    return out


def main() -> None:
    """Parse the settings, run the benchmark in a temporary directory, clean it up."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="conciseness")
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--noise", choices=["full", "lowrank"], default="full")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=available_cores(), help="in-process torch threads")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-runs", action="store_true", help="keep the two run directories (printed)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evotune-bench-"))
    try:
        bench(args, root)
    finally:
        if args.keep_runs:
            print(f"runs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def bench(args: argparse.Namespace, root: Path) -> None:
    """In-process run, then the Ray run (after Ray and the replicas are up), then report."""
    result: dict[str, Any] = {
        "settings": vars(args) | {"out": str(args.out) if args.out else None, "keep_runs": args.keep_runs},
        "machine": {
            "cores": available_cores(),
            "cpu": platform.processor() or platform.machine(),
            "load_avg_start": os.getloadavg(),
            "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
    }

    torch.set_num_threads(args.threads)
    ESTrainer(_config(args, root / "inproc"), progress=False).train()
    result["in_process"] = _summarise(root / "inproc") | {"threads": args.threads}

    t0 = time.perf_counter()
    session = start_local_ray(num_cpus=available_cores())
    result["ray_start_s"] = time.perf_counter() - t0
    made: list[RayEvaluator] = []
    startup: list[float] = []

    def factory(model: Any, tok: Any, task: Any, params: Any, cfg: Any) -> RayEvaluator:
        t = time.perf_counter()
        made.append(RayEvaluator(model, tok, task, params, cfg.model_copy(update={"ray": RayConfig(workers=args.workers)})))
        startup.append(time.perf_counter() - t)
        return made[-1]

    try:
        ESTrainer(_config(args, root / "ray"), progress=False, evaluator_factory=factory).train()
    finally:
        session.shutdown()
    ray_res = _summarise(root / "ray")
    ray_res |= {
        "workers": args.workers,
        "threads_per_worker": made[0].threads,
        "replica_startup_s": startup[0],
    }
    ray_res["setup_bytes"] = made[0].setup_bytes
    result["ray"] = ray_res
    result["bit_identical"] = (
        ray_res["fitness"] == result["in_process"]["fitness"]
        and ray_res["checksum"] == result["in_process"]["checksum"]
    )
    result["speedup"] = result["in_process"]["mean_iteration_s"] / ray_res["mean_iteration_s"]
    result["machine"]["load_avg_end"] = os.getloadavg()

    ip = result["in_process"]
    print(
        f"\nES iteration time, {args.model}, N={args.population}, P={args.prompts}, "
        f"{args.max_new_tokens} tokens"
    )
    print(f"  in-process 1 × {args.threads} threads : {ip['mean_iteration_s']:.2f} s  {ip['iteration_s']}")
    print(
        f"  Ray {args.workers} × {made[0].threads} thread(s)     : {ray_res['mean_iteration_s']:.2f} s  "
        f"{ray_res['iteration_s']}  (speed-up {result['speedup']:.2f}×)"
    )
    print(f"  bytes per iteration           : {ray_res['bytes_per_iteration']}")
    print(
        f"  Ray start {result['ray_start_s']:.1f} s, replicas ready {startup[0]:.1f} s "
        "(not in iteration times)"
    )
    print(f"  bit-identical weights         : {result['bit_identical']}")
    print(
        f"  load average start/end        : {result['machine']['load_avg_start']} / "
        f"{result['machine']['load_avg_end']}"
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if not result["bit_identical"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
