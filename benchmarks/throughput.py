"""ES throughput against plain batched inference, side by side in one run.

    python benchmarks/throughput.py                       # SmolLM2-135M, N=32, P=8, 64 new tokens
    python benchmarks/throughput.py --quick               # tiny random model, small sizes
    python benchmarks/throughput.py --device cuda --model arch:smollm2-135m --compile   # a GPU

Measures, on the same model, prompts (P per member), population N and max new tokens:
  (a) limit      plain batched greedy generation of the same N×P completions, unperturbed model,
                 at several batch sizes (best = the limit; batch P = the full-rank limit, i.e.
                 member by member at batch P with no noise work at all);
  (b) naive      the paper's loop written plainly: per member regenerate noise to perturb in place,
                 generate P completions, regenerate to restore; the update regenerates all N noises;
  (c) full-rank  one evotune ES iteration (EvolvingParams + SequentialEvaluator + tell + update);
  (d) low-rank   one evotune low-rank iteration (BatchedLowRankEvaluator, whole population batched).
With --compile, (a) at its best batch size and (d) run again with generation.compile (static KV
cache, compiled forward; CUDA graphs on a GPU); compiling is setup, not timed.
`arch:NAME` models have random weights (labelled so in the JSON); completions are then forced to
max-new-tokens (`--fixed-length`, default for arch:) so every phase generates the same tokens.
On CUDA the JSON adds each phase's peak GPU memory.
Prints completions/s, generated tokens/s, peak RSS, ratios to (a) and speed-ups over (b); writes JSON.

Each phase runs in a fresh spawned process (same code, same inputs), so its peak RSS is its own:
freed memory of an earlier phase would otherwise stay mapped in the allocator and count again.
Setup a run does once (loading the model, the fp32 master copy) is inside the RSS window but not
timed. Completions/s is the comparable rate (every phase produces N×P completions of at most
max-new-tokens); tokens/s counts generated tokens up to each stop token.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
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
    """Peak resident memory of this process during a block (sampled from /proc every 5 ms)."""

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


# -- what each phase does (run inside its own process) -------------------------------------------


_WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it", "an", "be", "this", "are", "or", "his"]


def fixed_prompts(tok: Any, count: int, length: int) -> list[str]:
    """`count` distinct prompts of exactly `length` tokens (common single-token words), no chat template."""
    out = []
    for i in range(count):
        ids = tok(" ".join(_WORDS[(i * 7 + j * (i + 1)) % len(_WORDS)] for j in range(length)),
                  add_special_tokens=False)["input_ids"][:length]
        text = tok.decode(ids)
        if len(tok(text, add_special_tokens=False)["input_ids"]) != length:
            raise ValueError(f"could not build a {length}-token prompt with this tokenizer")
        out.append(text)
    return out


class Bench:
    """Model, prompts and members of one phase process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from evotune.backends.models import load_model
        from evotune.es.strategy import ask
        from evotune.tasks import get_task

        self.spec = spec
        self.n, self.p, self.mnt = spec["population"], spec["prompts"], spec["max_new_tokens"]
        self.model, self.tok = load_model(spec["model"], spec["dtype"], spec["device"])
        self.fixed = spec["max_new_tokens"] if spec["fixed_length"] else None
        self.backend = spec["compile_backend"]
        self.task = get_task(spec["task"])
        self.examples = self.task.batch("train", self.p, 0, 1)
        self.prompts = [self.task.render(e, self.tok) for e in self.examples]
        if spec.get("prompt_tokens"):
            self.prompts = fixed_prompts(self.tok, self.p, spec["prompt_tokens"])
        self.members = ask(0, 1, self.n, sigma=spec["sigma"])

    def plain(self, bs: int, compiled: bool = False) -> tuple[Callable[[], Any] | None, Callable[[Any], dict[str, Any]]]:
        """(a) The same N×P completions from the unperturbed model at batch size `bs`."""
        from evotune.backends.hf import generate

        rows = [pr for _ in range(self.n) for pr in self.prompts]
        backend = self.backend if compiled else None

        def gen(rs: list[str]) -> Any:
            return generate(self.model, self.tok, rs, self.mnt, batch_size=bs, compile_backend=backend,
                            min_new_tokens=self.fixed)

        def setup() -> None:  # compile every shape the timed call will use
            gen(rows[:bs])
            if len(rows) % bs:
                gen(rows[: len(rows) % bs])

        def run(_: Any) -> dict[str, Any]:
            comps = gen(rows)
            return {"tokens": sum(c.n_tokens for c in comps), "batch_size": bs, "compiled": compiled}

        return (setup if compiled else None), run

    def naive(self) -> tuple[None, Callable[[Any], dict[str, Any]]]:
        """(b) The paper's algorithm without evotune's engineering (noise regenerated 3× per member)."""
        from evotune.backends.hf import generate
        from evotune.evaluation import score_rows

        sigma, alpha, n = self.spec["sigma"], self.spec["alpha"], self.n
        named = list(self.model.named_parameters())

        dev = next(self.model.parameters()).device

        def eps(seed: int, nm: str, shape: torch.Size) -> torch.Tensor:
            g = torch.Generator(device=dev).manual_seed(seed ^ zlib.crc32(nm.encode()))
            return torch.randn(shape, generator=g, device=dev)

        @torch.no_grad()
        def run(_: Any) -> dict[str, Any]:
            fitness, tokens, times = [], 0, {"noise": 0.0, "generate": 0.0, "update": 0.0}
            for m in self.members:
                t0 = time.perf_counter()
                for nm, t in named:
                    t.add_(eps(m.seed, nm, t.shape), alpha=sigma)
                t1 = time.perf_counter()
                comps = generate(self.model, self.tok, self.prompts, self.mnt, batch_size=self.p,
                                 min_new_tokens=self.fixed)
                t2 = time.perf_counter()
                for nm, t in named:
                    t.sub_(eps(m.seed, nm, t.shape), alpha=sigma)
                times["noise"] += (t1 - t0) + (time.perf_counter() - t2)
                times["generate"] += t2 - t1
                rows = score_rows(self.task, self.examples, comps)
                fitness.append(statistics.fmean(r["reward"] for r in rows))
                tokens += sum(c.n_tokens for c in comps)
            t0 = time.perf_counter()
            f = torch.tensor(fitness, dtype=torch.float64)
            z = ((f - f.mean()) / (f.std(unbiased=False) + 1e-8)).tolist()
            for nm, t in named:
                for m, zi in zip(self.members, z, strict=True):
                    t.add_(eps(m.seed, nm, t.shape), alpha=alpha / n * zi)
            times["update"] = time.perf_counter() - t0
            return {"tokens": tokens, "times": times, "batch_size": self.p}

        return None, run

    def evotune(
        self, noise: str, batch_size: int, compiled: bool = False
    ) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        """(c)/(d) One ES iteration exactly as the trainer runs it (evaluate, tell, update)."""
        from evotune.config import build_config
        from evotune.es import local_evaluator
        from evotune.es.params import make_params
        from evotune.es.strategy import tell

        s = self.spec
        cfg = build_config(
            None,
            {
                "model.name": s["model"],
                "task.name": s["task"],
                "es.population": self.n,
                "es.sigma": s["sigma"],
                "es.alpha": s["alpha"],
                "es.noise": noise,
                "es.rank": s["rank"],
                "es.prompts_per_iteration": self.p,
                "generation.max_new_tokens": self.mnt,
                "generation.batch_size": batch_size,
                "generation.min_new_tokens": self.fixed,
                "generation.compile": compiled,
                "generation.compile_backend": self.backend,
                "model.dtype": s["dtype"],
                "model.device": s["device"],
                "es.master_device": s["master_device"],
            },
        )

        def setup() -> Any:
            params = make_params(self.model, cfg.es)
            evaluator = local_evaluator(self.model, self.tok, self.task, params, cfg)
            if compiled:  # compile outside the timed call: another population of the same shape
                from evotune.es.strategy import ask as ask_

                evaluator(ask_(1, 1, self.n), self.examples, self.prompts)
            return params, evaluator

        def run(state: Any) -> dict[str, Any]:
            params, evaluator = state
            res = evaluator(self.members, self.examples, self.prompts)
            t0 = time.perf_counter()
            coeffs = tell(self.members, res.fitness, cfg.es.shaping)
            if coeffs is not None:
                params.apply_update(coeffs, cfg.es.alpha)  # the optimizer applies the 1/N
            return {
                "tokens": res.completion_tokens,
                "times": {**res.times, "update": time.perf_counter() - t0},
                "fitness_mean": statistics.fmean(res.fitness),
                "batch_size": batch_size,
            }

        return setup, run


def noise_options(model: Any, reps: int = 2) -> dict[str, float]:
    """Seconds to draw one full-rank noise (every parameter, N(0,1) fp32) by several methods."""
    import numpy as np

    from evotune.es.params import EvolvingParams
    from evotune.noise import noise

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
    return out


def phase_process(spec: dict[str, Any], out: Any) -> None:
    """Entry point of one phase's process: build, time, measure, report through `out`."""
    torch.set_num_threads(spec["threads"])
    import transformers.models.llama.modeling_llama  # noqa: F401  (the runtime, before any weights)

    import evotune.es.lowrank  # noqa: F401
    import evotune.trainers.es  # noqa: F401

    runtime = RSSPeak.now()
    with RSSPeak() as mem:
        bench = Bench(spec)
        model_bytes = sum(t.numel() * 4 for t in bench.model.parameters())  # fp32 size, whatever the dtype
        if spec["phase"] == "noise":
            out.put({"noise_options_s": noise_options(bench.model)})
            return
        kind, arg = spec["phase"]
        setup, run = {
            "plain": lambda: bench.plain(arg),
            "naive": bench.naive,
            "full": lambda: bench.evotune("full", arg),
            "lowrank": lambda: bench.evotune("lowrank", arg),
            "plain_compiled": lambda: bench.plain(arg, compiled=True),
            "lowrank_compiled": lambda: bench.evotune("lowrank", arg, compiled=True),
        }[kind]()
        t_setup = time.perf_counter()
        state = setup() if setup is not None else None
        t_setup = time.perf_counter() - t_setup
        cuda = bench.model.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        extra = run(state)
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if cuda:
            extra["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        extra["setup_s"] = t_setup
    n = bench.n * bench.p
    out.put(
        {
            **extra,
            "wall_s": wall,
            "cpu_s": cpu,
            "completions": n,
            "completions_per_s": n / wall,
            "tokens_per_s": extra["tokens"] / wall,
            "peak_rss_mb": mem.peak / 2**20,
            "runtime_rss_mb": runtime / 2**20,
            "model_mb_fp32": model_bytes / 2**20,
            "load_avg_1min": os.getloadavg()[0],
        }
    )


def in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in a fresh spawned interpreter and return what it reported."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=phase_process, args=(spec, q))
    proc.start()
    while True:
        try:
            res = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"phase {spec['phase']} died with exit code {proc.exitcode}") from None
    proc.join()
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="alias, model directory, run directory or arch:NAME")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16")
    ap.add_argument("--master-device", default="device", help="es.master_device: device | cpu")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="synthetic prompts of exactly K tokens")
    ap.add_argument("--compile", action="store_true", help="also the compiled limit and compiled low rank")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: fast smoke)")
    ap.add_argument(
        "--fixed-length", action=argparse.BooleanOptionalAction, default=None,
        help="force every completion to max-new-tokens (default: on for arch: models)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny random model and small sizes (smoke test)")
    ap.add_argument("--task", default="conciseness", help="prompts and reward come from this task")
    ap.add_argument("--population", "-N", type=int, default=None, help="N (default 32; 4 with --quick)")
    ap.add_argument("--prompts", "-P", type=int, default=None, help="prompts per member (default 8; 4 quick)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (16 with --quick)")
    ap.add_argument("--rank", type=int, default=1, help="low-rank noise rank r")
    ap.add_argument("--sigma", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, default=5e-4)
    ap.add_argument(
        "--batch-sizes", default=None, help="batch sizes for (a), comma-separated; default P,8P,N·P"
    )
    ap.add_argument(
        "--lowrank-batch", type=int, default=None, help="rows per call in (d); default (a)'s best"
    )
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: noise,naive,full,lowrank")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per phase (default: all cores)")
    ap.add_argument(
        "--json", default=None, help="output (default benchmarks/results/throughput-<model>.json)"
    )
    args = ap.parse_args(argv)

    n = args.population or (4 if args.quick else 32)
    p = args.prompts or (4 if args.quick else 8)
    mnt = args.max_new_tokens or (16 if args.quick else 64)
    threads = args.threads or os.cpu_count() or 1
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tmp = None
    model_spec = args.model
    if args.quick:
        from evotune.backends.models import make_tiny

        tmp = tempfile.TemporaryDirectory()
        model_spec = str(make_tiny(Path(tmp.name) / "tiny", seed=0))
    label = "tiny" if args.quick else args.model
    fixed = args.fixed_length if args.fixed_length is not None else args.model.startswith("arch:")
    base = {
        "model": model_spec,
        "device": args.device,
        "dtype": args.dtype,
        "master_device": args.master_device,
        "fixed_length": fixed,
        "prompt_tokens": args.prompt_tokens,
        "compile_backend": args.compile_backend,
        "task": args.task,
        "population": n,
        "prompts": p,
        "max_new_tokens": mnt,
        "rank": args.rank,
        "sigma": args.sigma,
        "alpha": args.alpha,
        "threads": threads,
    }
    random = " (random weights, throughput only)" if args.model.startswith("arch:") else ""
    print(f"model {label}{random} on {args.device}, N={n} P={p} max_new_tokens={mnt}{' fixed' if fixed else ''} "
          f"rank={args.rank}, threads={threads}", flush=True)

    def phase(name: str, what: Any) -> dict[str, Any]:
        row = {"phase": name, **in_process({**base, "phase": what})}
        print(
            f"  {name:<22} {row['wall_s']:8.1f} s (cpu {row['cpu_s']:7.1f} s)  {row['completions_per_s']:6.2f} "
            f"compl/s  {row['tokens_per_s']:6.1f} tok/s  peak RSS {row['peak_rss_mb']:6.0f} MB  "
            f"load {row['load_avg_1min']:.1f}"
            + (f"  GPU {row['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in row else ""),
            flush=True,
        )
        return row

    noise_opts: dict[str, float] = {}
    if "noise" not in skip:
        noise_opts = in_process({**base, "phase": "noise"})["noise_options_s"]
        for k, v in noise_opts.items():
            print(f"  noise: {k:<56} {v:6.2f} s", flush=True)
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")} if args.batch_sizes else {p, 8 * p, n * p})
    results = [phase(f"a_limit_batch{bs}", ("plain", bs)) for bs in sizes]
    limit = max(results, key=lambda r: r["completions_per_s"])
    climit = None
    if args.compile:
        climit = phase(f"a_limit_compiled_batch{limit['batch_size']}", ("plain_compiled", limit["batch_size"]))
        results.append(climit)
    if "naive" not in skip:
        results.append(phase("b_naive", ("naive", p)))
    if "full" not in skip:
        results.append(phase("c_evotune_full_rank", ("full", p)))
    if "lowrank" not in skip:
        results.append(phase("d_evotune_low_rank", ("lowrank", args.lowrank_batch or limit["batch_size"])))
        if args.compile:
            results.append(phase("e_evotune_low_rank_compiled",
                                 ("lowrank_compiled", args.lowrank_batch or limit["batch_size"])))

    by = {r["phase"]: r for r in results}
    model_mb = results[0]["model_mb_fp32"]
    for r in results:
        r["ratio_to_limit"] = r["completions_per_s"] / limit["completions_per_s"]
        r["tokens_ratio_to_limit"] = r["tokens_per_s"] / limit["tokens_per_s"]
        r["peak_rss_x_model"] = r["peak_rss_mb"] / model_mb
        r["peak_rss_above_runtime_x_model"] = (r["peak_rss_mb"] - r["runtime_rss_mb"]) / model_mb
    summary: dict[str, Any] = {"limit_phase": limit["phase"]}
    for k in ("c_evotune_full_rank", "d_evotune_low_rank"):
        if k in by and "b_naive" in by:
            summary[f"speedup_{k[0]}_over_naive"] = (
                by[k]["completions_per_s"] / by["b_naive"]["completions_per_s"]
            )
    full_limit = by.get(f"a_limit_batch{p}")
    if "c_evotune_full_rank" in by and full_limit:
        c = by["c_evotune_full_rank"]
        summary["full_rank_vs_full_rank_limit"] = c["completions_per_s"] / full_limit["completions_per_s"]
        summary["full_rank_peak_rss_above_runtime_x_model"] = c["peak_rss_above_runtime_x_model"]
    if "d_evotune_low_rank" in by:
        summary["low_rank_vs_limit"] = by["d_evotune_low_rank"]["ratio_to_limit"]
    if climit is not None and "e_evotune_low_rank_compiled" in by:
        e = by["e_evotune_low_rank_compiled"]
        summary["low_rank_compiled_vs_compiled_limit"] = e["completions_per_s"] / climit["completions_per_s"]
        if "b_naive" in by:
            summary["speedup_e_over_naive"] = e["completions_per_s"] / by["b_naive"]["completions_per_s"]
    if "c_evotune_full_rank" in by:
        c = by["c_evotune_full_rank"]
        summary["full_rank_noise_share"] = c["times"].get("noise", 0.0) / c["wall_s"]
        summary["full_rank_s_per_iteration"] = c["wall_s"]
    out = {
        "config": {
            **{k: v for k, v in base.items() if k != "model"},
            "model": label,
            "weights": "random (throughput only)" if args.model.startswith("arch:") else "trained",
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "model_mb_fp32": model_mb,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "phases": results,
        "noise_options_s": noise_opts,
        "summary": summary,
    }
    print("\nphase                   compl/s   tok/s  ×limit  peak RSS (×model; above runtime ×model)")
    for r in results:
        print(
            f"{r['phase']:<22} {r['completions_per_s']:8.2f} {r['tokens_per_s']:7.1f}  {r['ratio_to_limit']:5.3f}  "
            f"{r['peak_rss_mb']:6.0f} MB ({r['peak_rss_x_model']:.2f}×; {r['peak_rss_above_runtime_x_model']:.2f}×)"
        )
    for k, v in summary.items():
        print(f"{k}: {v if isinstance(v, str) else f'{v:.3f}'}")
    default = Path(__file__).parent / "results" / f"throughput-{label.replace(':', '-')}{'' if args.device == 'cpu' else '-' + args.device}.json"
    dest = Path(args.json) if args.json else default
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    print(f"wrote {dest}")
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
