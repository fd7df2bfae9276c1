"""ES throughput against plain batched inference, side by side in one process.

    python benchmarks/throughput.py                       # SmolLM2-135M, N=32, P=8, 64 new tokens
    python benchmarks/throughput.py --quick               # tiny random model, seconds

Measures, on the same model, prompts (P per member), population N and max new tokens:
  (a) limit      plain batched greedy generation of the same N×P completions, unperturbed model,
                 at several batch sizes (best = the limit; batch P = the full-rank limit, i.e.
                 member by member at batch P with no noise work at all);
  (b) naive      the paper's loop written plainly: per member regenerate noise to perturb in place,
                 generate P completions, regenerate to restore; the update regenerates all N noises;
  (c) full-rank  one evotune ES iteration (EvolvingParams + SequentialEvaluator + tell + update);
  (d) low-rank   one evotune low-rank iteration (BatchedLowRankEvaluator, whole population batched).
Prints completions/s, generated tokens/s, peak RSS, ratios to (a) and speed-ups over (b); writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch


class RSSPeak:
    """Peak resident memory of this process during a block (sampled from /proc, 5 ms period).

    `ru_maxrss` only ever grows over the process's life, so phases run in one process need their
    own sampler to report their own peak.
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period, self.peak, self._stop = period, 0, threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.period)

    def __enter__(self) -> RSSPeak:
        self.peak = self.now()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.now())


def measure(
    name: str, fn: Callable[[Any], dict[str, Any]], n_completions: int, setup: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Run one phase: wall and CPU time of `fn`, peak RSS over `setup` + `fn` (setup is not timed).

    Setup is what a run does once (the fp32 master copy, the evaluator), not per iteration.
    """
    gc.collect()
    with RSSPeak() as mem:
        state = setup() if setup is not None else None
        t0, c0 = time.perf_counter(), time.process_time()
        extra = fn(state)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = extra.pop("tokens")
    row = {
        "phase": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "completions": n_completions,
        "tokens": tokens,
        "completions_per_s": n_completions / wall,
        "tokens_per_s": tokens / wall,
        "peak_rss_mb": mem.peak / 2**20,
        "load_avg_1min": os.getloadavg()[0],
        **extra,
    }
    print(
        f"  {name:<24} {wall:8.1f} s (cpu {cpu:7.1f} s)  {row['completions_per_s']:7.2f} compl/s  "
        f"{row['tokens_per_s']:7.1f} tok/s  peak RSS {row['peak_rss_mb']:7.0f} MB  load {row['load_avg_1min']:.1f}",
        flush=True,
    )
    return row


def noise_options(model: Any, reps: int = 2) -> dict[str, float]:
    """Seconds to draw one full-rank noise (every parameter, N(0,1) fp32) by several methods."""
    import numpy as np

    from evotune.es.noise import noise
    from evotune.es.params import EvolvingParams

    named = sorted(model.named_parameters(), key=lambda t: -t[1].numel())
    bufs = {nm: torch.empty(t.shape) for nm, t in named}

    def torch_fresh(nm: str) -> None:
        noise(1, nm, tuple(bufs[nm].shape))

    def torch_out(nm: str) -> None:
        noise(1, nm, tuple(bufs[nm].shape), out=bufs[nm])

    def numpy_gen(bitgen: Any) -> Callable[[str], None]:
        def f(nm: str) -> None:
            rng = np.random.Generator(bitgen(zlib.crc32(nm.encode())))
            rng.standard_normal(out=bufs[nm].view(-1).numpy(), dtype=np.float32)

        return f

    def timed(f: Callable[[str], None], threads: int) -> float:
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            if threads == 1:
                for nm, _ in named:
                    f(nm)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(f, [nm for nm, _ in named]))
            best = min(best, time.perf_counter() - t0)
        return best

    out: dict[str, float] = {}
    for label, f in [
        ("torch.randn fresh tensor", torch_fresh),
        ("torch.randn into buffer", torch_out),
        ("numpy SFC64 into buffer", numpy_gen(np.random.SFC64)),
        ("numpy Philox into buffer", numpy_gen(np.random.Philox)),
    ]:
        for threads in (1, 2):
            out[f"{label}, {threads} thread(s)"] = timed(f, threads)
    bufs.clear()
    params = EvolvingParams(named)
    t0 = time.perf_counter()
    for k in range(reps):
        params.perturb(k + 1, 1, 1e-3)
    out["evotune perturb (draw + write master+σε), per member"] = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    params.apply_update({11: 1.0, 12: -1.0}, 0.0)  # timing only: scale 0 leaves the weights as they are
    out["evotune update, per member"] = (time.perf_counter() - t0) / 2
    params.restore()
    for k, v in out.items():
        print(f"  noise: {k:<56} {v:6.2f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="alias, model directory or run directory")
    ap.add_argument("--quick", action="store_true", help="tiny random model and small sizes (smoke test)")
    ap.add_argument("--task", default="conciseness", help="prompts and reward come from this task")
    ap.add_argument("--population", "-N", type=int, default=None, help="N (default 32; 4 with --quick)")
    ap.add_argument("--prompts", "-P", type=int, default=None, help="prompts per member (default 8; 4 quick)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (16 with --quick)")
    ap.add_argument("--rank", type=int, default=1, help="low-rank noise rank r")
    ap.add_argument("--sigma", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, default=5e-4)
    ap.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated batch sizes for (a); default P,8P,N·P (deduplicated)",
    )
    ap.add_argument(
        "--lowrank-batch", type=int, default=None, help="rows per generate call in (d); default: (a)'s best"
    )
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: naive,full,lowrank")
    ap.add_argument(
        "--no-noise-options", action="store_true", help="skip the noise-generation micro-benchmark"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument(
        "--json", default=None, help="write results here (default benchmarks/results/<model>.json)"
    )
    args = ap.parse_args(argv)

    from evotune.backends.hf import generate
    from evotune.backends.models import load_model, make_tiny
    from evotune.config import build_config
    from evotune.es.strategy import ask, tell
    from evotune.es.trainer import make_evaluator, make_params
    from evotune.evaluation import score_rows
    from evotune.tasks import get_task

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    n = args.population or (4 if args.quick else 32)
    p = args.prompts or (4 if args.quick else 8)
    mnt = args.max_new_tokens or (16 if args.quick else 64)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tmp = None
    model_spec = args.model
    if args.quick:
        tmp = tempfile.TemporaryDirectory()
        model_spec = str(make_tiny(Path(tmp.name) / "tiny", seed=0))
    rss_runtime = RSSPeak.now()
    model, tok = load_model(model_spec)
    model_bytes = sum(t.numel() * 4 for t in model.parameters())
    task = get_task(args.task)
    examples = task.batch("train", p, 0, 1)
    prompts = [task.render(e, tok) for e in examples]
    rows_all = [pr for _ in range(n) for pr in prompts]
    batch_sizes = sorted(
        {int(b) for b in args.batch_sizes.split(",")} if args.batch_sizes else {p, 8 * p, n * p}
    )
    members = ask(0, 1, n)
    base = {
        "model.name": model_spec,
        "task.name": args.task,
        "es.population": n,
        "es.sigma": args.sigma,
        "es.alpha": args.alpha,
        "es.prompts_per_iteration": p,
        "generation.max_new_tokens": mnt,
    }
    print(
        f"model {args.model if not args.quick else 'tiny'} ({model_bytes / 2**20:.0f} MB fp32), "
        f"N={n} P={p} max_new_tokens={mnt} rank={args.rank}, threads={torch.get_num_threads()}, "
        f"runtime RSS before the model {rss_runtime / 2**20:.0f} MB",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    noise_opts = {} if args.no_noise_options else noise_options(model)

    # (a) the limit: the same N×P completions from the unperturbed model
    def plain(bs: int) -> Callable[[Any], dict[str, Any]]:
        def run(_: Any) -> dict[str, Any]:
            comps = generate(model, tok, rows_all, mnt, batch_size=bs)
            return {"tokens": sum(c.n_tokens for c in comps), "batch_size": bs}

        return run

    for bs in batch_sizes:
        results.append(measure(f"a_limit_batch{bs}", plain(bs), n * p))

    # (b) naive: the paper's algorithm without evotune's engineering
    def naive(_: Any) -> dict[str, Any]:
        named = [(nm, t) for nm, t in model.named_parameters()]
        sigma, alpha = args.sigma, args.alpha

        def eps(seed: int, nm: str, shape: torch.Size) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed ^ zlib.crc32(nm.encode()))
            return torch.randn(shape, generator=g)

        fitness, tokens, times = [], 0, {"noise": 0.0, "generate": 0.0, "update": 0.0}
        with torch.no_grad():
            for m in members:
                t0 = time.perf_counter()
                for nm, t in named:
                    t.add_(eps(m.seed, nm, t.shape), alpha=sigma)
                t1 = time.perf_counter()
                comps = generate(model, tok, prompts, mnt, batch_size=p)
                t2 = time.perf_counter()
                for nm, t in named:
                    t.sub_(eps(m.seed, nm, t.shape), alpha=sigma)
                times["noise"] += (t1 - t0) + (time.perf_counter() - t2)
                times["generate"] += t2 - t1
                rows = score_rows(task, examples, comps)
                fitness.append(statistics.fmean(r["reward"] for r in rows))
                tokens += sum(c.n_tokens for c in comps)
            t0 = time.perf_counter()
            f = torch.tensor(fitness, dtype=torch.float64)
            z = ((f - f.mean()) / (f.std(unbiased=False) + 1e-8)).tolist()
            for nm, t in named:
                for m, zi in zip(members, z, strict=True):
                    t.add_(eps(m.seed, nm, t.shape), alpha=alpha / n * zi)
            times["update"] = time.perf_counter() - t0
        return {"tokens": tokens, "times": times}

    def fresh() -> None:
        """Reload the base weights from disk (no in-memory snapshot to inflate the next phase's RSS)."""
        nonlocal model
        model = None
        gc.collect()
        model, _ = load_model(model_spec)

    if "naive" not in skip:
        fresh()
        results.append(measure("b_naive", naive, n * p))

    def evotune_iteration(
        noise_kind: str, batch_size: int
    ) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        over = {**base, "es.noise": noise_kind, "es.rank": args.rank, "generation.batch_size": batch_size}
        cfg = build_config(None, over)

        def setup() -> Any:
            params = make_params(model, cfg)
            return params, make_evaluator(model, tok, task, params, cfg, mnt)

        def run(state: Any) -> dict[str, Any]:
            params, evaluator = state
            res = evaluator(members, examples, prompts)
            t0 = time.perf_counter()
            coeffs = tell(members, res.fitness, cfg.es.shaping)
            if coeffs is not None:
                params.apply_update(coeffs, cfg.es.alpha / n)
            times = {**res.times, "update": time.perf_counter() - t0}
            return {
                "tokens": res.completion_tokens,
                "times": times,
                "fitness_mean": statistics.fmean(res.fitness),
                "batch_size": batch_size,
            }

        return setup, run

    best_a = max((r for r in results if r["phase"].startswith("a_")), key=lambda r: r["completions_per_s"])
    if "full" not in skip:
        fresh()
        setup, run = evotune_iteration("full", p)
        results.append(measure("c_evotune_full_rank", run, n * p, setup))
    if "lowrank" not in skip:
        fresh()
        lr_batch = args.lowrank_batch or best_a["batch_size"]
        setup, run = evotune_iteration("lowrank", lr_batch)
        results.append(measure("d_evotune_low_rank", run, n * p, setup))

    by = {r["phase"]: r for r in results}
    limit = max((r for r in results if r["phase"].startswith("a_")), key=lambda r: r["completions_per_s"])
    full_limit = by.get(f"a_limit_batch{p}")
    for r in results:
        r["ratio_to_limit"] = r["completions_per_s"] / limit["completions_per_s"]
        r["tokens_ratio_to_limit"] = r["tokens_per_s"] / limit["tokens_per_s"]
        r["peak_rss_x_model"] = r["peak_rss_mb"] * 2**20 / model_bytes
        r["peak_rss_above_runtime_x_model"] = (r["peak_rss_mb"] * 2**20 - rss_runtime) / model_bytes
    summary: dict[str, Any] = {"limit_phase": limit["phase"]}
    if "b_naive" in by:
        for k in ("c_evotune_full_rank", "d_evotune_low_rank"):
            if k in by:
                summary[f"speedup_{k[0]}_over_naive"] = (
                    by[k]["completions_per_s"] / by["b_naive"]["completions_per_s"]
                )
    if "c_evotune_full_rank" in by and full_limit:
        summary["full_rank_vs_full_rank_limit"] = (
            by["c_evotune_full_rank"]["completions_per_s"] / full_limit["completions_per_s"]
        )
    if "d_evotune_low_rank" in by:
        summary["low_rank_vs_limit"] = by["d_evotune_low_rank"]["ratio_to_limit"]
    out = {
        "config": {
            "model": "tiny" if args.quick else args.model,
            "population": n,
            "prompts_per_member": p,
            "max_new_tokens": mnt,
            "rank": args.rank,
            "sigma": args.sigma,
            "alpha": args.alpha,
            "task": args.task,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "model_mb_fp32": model_bytes / 2**20,
            "runtime_rss_mb": rss_runtime / 2**20,
            "load_avg_at_end": os.getloadavg(),
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "phases": results,
        "noise_options_s": noise_opts,
        "summary": summary,
    }
    print("\nphase                      compl/s   tok/s  ×limit  peak RSS (×model)")
    for r in results:
        print(
            f"{r['phase']:<26} {r['completions_per_s']:7.2f} {r['tokens_per_s']:7.1f}  {r['ratio_to_limit']:5.3f}  "
            f"{r['peak_rss_mb']:6.0f} MB ({r['peak_rss_x_model']:.2f}×)"
        )
    for k, v in summary.items():
        print(f"{k}: {v if isinstance(v, str) else f'{v:.3f}'}")
    dest = (
        Path(args.json)
        if args.json
        else Path(__file__).parent / "results" / f"throughput-{out['config']['model']}.json"
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    print(f"wrote {dest}")
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
