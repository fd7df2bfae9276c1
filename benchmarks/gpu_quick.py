"""The whole GPU check in one process: exactness, eager throughput, the `cuda` tests, compiled generation.

    python benchmarks/gpu_quick.py --out $OUT/gpu_quick.jsonl           # on a CUDA GPU (≤ 8 min)
    python benchmarks/gpu_quick.py --only compiled --out $OUT/x.jsonl    # rerun one step
    python benchmarks/gpu_quick.py --dry-run --out /tmp/dry.jsonl        # every step on the CPU, tiny sizes

A GPU is lent for minutes, so nothing here may waste one: every step runs under its own timeout, in
a process of its own that shares the step's model, prompts and compiled graphs among its phases (a
SIGALRM ends it cleanly at its next Python instruction; the parent kills it 10 s later if a compile or
a kernel keeps it from getting there), and every measurement is appended to the results file (JSON
lines, flushed and fsynced) the moment it exists, so a step killed by its timeout, or a crash, still
leaves what it measured. A failing measurement is one `"status": "error"` line and the script goes on.
Steps:

- exact     device identity; noise purity (also past CUDA's grid clamp); perturb/restore bit-exact for
            full rank, master on the host, low rank; the N-seed update twice from one master; master on
            the host vs on the device (same update?); one member alone vs in a group (same logits?).
- eager     per model (arch:smollm2-135m, qwen2.5-0.5b, 1.5b, 7b; N=32, P=8, 64+64 tokens): the batched
            inference limit (N·P rows in one call), the limit at batch P, the paper's naive loop, evotune
            full rank and low rank, each with its peak GPU memory. Per-member costs (the batch-P limit,
            the naive loop, full rank) are timed on --members-timed members and scaled to N; every
            update uses all N seeds.
- cuda      `pytest -m cuda tests/test_cuda.py` in a child process (log beside the results).
- compiled  SmolLM2 with inductor + CUDA graphs: the compiled limit, compiled low rank, graphs added by a
            second population (must be 0), and whether perturbed members' tokens differ from the
            unperturbed model's (the hooks are kept).

Each line: {"step", "check"|"phase", ..., "status": "ok"|"error"|"timeout"}. `arch:` models have
random weights: throughput only. The summary line at the end checks the targets of docs/gpu.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read once, at cuBLAS's first use: before torch
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from evotune.timeouts import time_limit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("exact", "eager", "cuda", "compiled")
GPU_MODELS = ("arch:smollm2-135m", "arch:qwen2.5-0.5b", "arch:qwen2.5-1.5b", "arch:qwen2.5-7b")
GPU_TIMEOUTS = {"exact": 35, "eager": 140, "cuda": 105, "compiled": 120}  # seconds: 400 (+10 s grace per child)
DRY_TIMEOUTS = {"exact": 60, "eager": 90, "cuda": 90, "compiled": 90}


class StepTimeout(BaseException):
    """Raised by SIGALRM inside a step (a BaseException, so no library `except Exception` swallows it)."""


@dataclass
class Ctx:
    """Where and how big: the GPU sizes, or the dry run's tiny ones."""

    device: torch.device
    dtype: str
    models: list[str]
    compiled_model: str
    n: int
    p: int
    prompt_tokens: int
    new_tokens: int
    members_timed: int
    backend: str
    out: Path
    tmp: Path
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def emit(self, step: str, **row: Any) -> dict[str, Any]:
        row = {"step": step, **row}
        row.setdefault("status", "ok")
        self.lines.append(row)
        with open(self.out, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        brief = {k: v for k, v in row.items() if k not in ("step", "status") and not isinstance(v, (list, dict))}
        print(f"[{step}] {row['status']}: {brief}", flush=True)
        return row


def alarm(seconds: float) -> contextlib.AbstractContextManager[None]:
    """End a step with StepTimeout after `seconds` (at its next Python instruction)."""
    return time_limit(seconds, lambda: StepTimeout(f"timed out after {seconds:.0f} s"))


def guarded(ctx: Ctx, step: str, what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """One measurement: its line, or one error line (StepTimeout passes through to the step)."""
    try:
        return ctx.emit(step, **{"check" if step == "exact" else "phase": what, **fn()})
    except StepTimeout:
        raise
    except Exception as exc:  # one line, and the step goes on
        ctx.emit(step, **{"check" if step == "exact" else "phase": what}, status="error",
                 error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                 where=traceback.format_exc(limit=-2).strip().splitlines()[-3:])
        return None


def sync(ctx: Ctx) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


def timed(ctx: Ctx, fn: Callable[[], Any]) -> tuple[float, Any, float | None]:
    """(seconds, result, peak GPU MB) of one call."""
    if ctx.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = fn()
    sync(ctx)
    peak = torch.cuda.max_memory_allocated() / 2**20 if ctx.cuda else None
    return time.perf_counter() - t0, res, peak


def load(ctx: Ctx, spec: str) -> tuple[Any, Any]:
    from evotune.backends.models import load_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random weights.*")
        return load_model(spec, ctx.dtype, str(ctx.device))


def free() -> None:
    """Return what the last step held to the device (its model is unreachable once the step returns)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- exact -------------------------------------------------------------------------------------------------
def step_exact(ctx: Ctx) -> None:
    from evotune.config import ESConfig
    from evotune.es.lowrank import BatchedForward
    from evotune.es.params import EvolvingParams, gpu_identity, make_params, select_params
    from evotune.es.strategy import ask
    from evotune.noise import noise

    dev = ctx.device
    import transformers

    guarded(ctx, "exact", "device", lambda: {
        "ok": True, "device": str(dev), "gpu": gpu_identity(dev), "torch": torch.__version__,
        "transformers": transformers.__version__, "cuda": torch.version.cuda, "dtype": ctx.dtype})

    def purity() -> dict[str, Any]:
        shape = (1024, 1024)  # 1 M elements: past the 270,336 of CUDA randn's grid clamp on a 132-SM GPU
        a, b = noise(7, "w", shape, device=dev), noise(7, "w", shape, device=dev)
        c = noise(7, "v", shape, device=dev)
        out = torch.empty(shape, device=dev)
        same_out = torch.equal(noise(7, "w", shape, out=out), a)
        return {"ok": bool(torch.equal(a, b) and not torch.equal(a, c) and same_out),
                "std": float(a.std()), "numel": a.numel()}

    guarded(ctx, "exact", "noise_pure", purity)
    model, tok = load(ctx, ctx.compiled_model)
    members = ask(0, 1, ctx.n, sigma=1e-2)  # the σ of alone_vs_group's BatchedForward

    def restore_exact(es: ESConfig) -> dict[str, Any]:
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        params = make_params(model, es)
        for m in members[:3]:
            params.perturb(m.seed, m.sign, 1e-3)
        moved = any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
        params.restore()
        ok = all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        return {"ok": bool(ok and moved), "moved": moved}

    guarded(ctx, "exact", "restore_full_rank", lambda: restore_exact(ESConfig()))
    guarded(ctx, "exact", "restore_master_on_host", lambda: restore_exact(ESConfig(master_device="cpu")))
    guarded(ctx, "exact", "restore_low_rank", lambda: restore_exact(ESConfig(noise="lowrank")))
    coeffs = {m.seed: float(i % 5 - 2) for i, m in enumerate(members)}  # all N seeds

    def update_twice() -> dict[str, Any]:
        params = EvolvingParams(select_params(model), es=ESConfig(population=ctx.n))
        start = {n: t.clone() for n, t in params.master.items()}
        params.apply_update(coeffs, 1e-3)
        first = params.checksum()
        matches_model = params.model_matches_master()
        params.load_master(start)
        params.apply_update(coeffs, 1e-3)
        second = params.checksum()
        params.load_master(start)
        return {"ok": first == second and matches_model, "model_matches_master": matches_model, "seeds": len(coeffs)}

    guarded(ctx, "exact", "update_twice_same", update_twice)

    def host_vs_device() -> dict[str, Any]:
        on_dev = EvolvingParams(select_params(model), es=ESConfig(population=ctx.n))
        start = {n: t.clone() for n, t in on_dev.master.items()}
        on_dev.apply_update(coeffs, 1e-3)
        a = {n: t.to("cpu", copy=True) for n, t in on_dev.master.items()}  # (.cpu() of a CPU tensor is itself)
        on_dev.load_master(start)
        on_host = EvolvingParams(select_params(model), es=ESConfig(population=ctx.n), master_device="cpu")
        on_host.apply_update(coeffs, 1e-3)
        differ = sum(int((a[n] != on_host.master[n]).sum()) for n in a)
        on_host.load_master(start)
        return {"ok": differ == 0, "elements_differing": differ, "elements": sum(t.numel() for t in a.values())}

    guarded(ctx, "exact", "master_host_vs_device", host_vs_device)

    def alone_vs_group() -> dict[str, Any]:
        from throughput import fixed_prompts

        params = make_params(model, ESConfig(noise="lowrank", sigma=1e-2))
        fwd = BatchedForward(model, params, rank=params.noise_fn.rank, fuse=False)  # type: ignore[attr-defined]
        enc = tok(fixed_prompts(tok, ctx.p, ctx.prompt_tokens), return_tensors="pt",
                  add_special_tokens=False)["input_ids"].to(dev)

        @torch.no_grad()
        def logits(group: list[Any]) -> torch.Tensor:
            with fwd.active(fwd.make_group(group, ctx.p)):
                return model(enc.repeat(len(group), 1)).logits[: ctx.p].float()

        alone = logits(members[:1])
        rows = {}
        for g in sorted({2, 4, ctx.n}):
            in_group = logits(members[:g])
            rows[g] = float((in_group - alone).abs().max())
        return {"ok": all(v == 0 for v in rows.values()), "max_abs_diff_by_group": rows}

    guarded(ctx, "exact", "member_alone_vs_in_group", alone_vs_group)


# -- eager throughput ----------------------------------------------------------------------------------------
def measure_model(ctx: Ctx, spec: str) -> None:
    from throughput import fixed_prompts

    from evotune.backends.hf import generate
    from evotune.config import build_config
    from evotune.es import local_evaluator
    from evotune.es.params import make_params
    from evotune.es.strategy import ask, tell
    from evotune.tasks import get_task

    n, p, mnt, k = ctx.n, ctx.p, ctx.new_tokens, min(ctx.members_timed, ctx.n)
    t0 = time.perf_counter()
    model, tok = load(ctx, spec)
    dev = ctx.device
    task = get_task("conciseness")
    examples = task.batch("train", p, 0, 1)
    prompts = fixed_prompts(tok, p, ctx.prompt_tokens)
    members = ask(0, 1, n, sigma=1e-3)  # es.sigma of the evaluators below
    params_b = sum(t.numel() for t in model.parameters())
    base = {"model": spec, "n": n, "p": p, "prompt_tokens": ctx.prompt_tokens, "new_tokens": mnt,
            "params": params_b, "load_s": time.perf_counter() - t0}

    def gen(rows: list[str], bs: int) -> Any:
        return generate(model, tok, rows, mnt, batch_size=bs, min_new_tokens=mnt)

    gen(prompts, p)  # warm-up: kernels, allocator

    def rate(s: float, completions: int, peak: float | None, **extra: Any) -> dict[str, Any]:
        return {**base, "s": s, "completions": completions, "compl_per_s": completions / s,
                "peak_gpu_mb": peak, **extra}

    def limit() -> dict[str, Any]:
        s, _, peak = timed(ctx, lambda: gen(prompts * n, n * p))
        return rate(s, n * p, peak, batch=n * p)

    def limit_p() -> dict[str, Any]:
        s, _, peak = timed(ctx, lambda: gen(prompts * k, p))
        return rate(s / k * n, n * p, peak, batch=p, members_timed=k, scaled_to=n)

    names = [(nm, t) for nm, t in model.named_parameters()]

    @torch.no_grad()
    def naive() -> dict[str, Any]:
        import zlib

        def eps(seed: int, nm: str, t: torch.Tensor) -> torch.Tensor:
            g = torch.Generator(device=dev).manual_seed(seed ^ zlib.crc32(nm.encode()))
            return torch.randn(t.shape, generator=g, device=dev).to(t.dtype)

        def member(m: Any) -> Any:
            for nm, t in names:
                t.add_(eps(m.seed, nm, t), alpha=1e-3)
            out = gen(prompts, p)
            for nm, t in names:
                t.sub_(eps(m.seed, nm, t), alpha=1e-3)
            return out

        s_members, _, peak = timed(ctx, lambda: [member(m) for m in members[:k]])
        z = [float(i % 5 - 2) for i in range(n)]

        def update() -> None:
            for nm, t in names:
                for m, zi in zip(members, z, strict=True):
                    t.add_(eps(m.seed, nm, t), alpha=0.0 * zi)  # timing only: the weights stay as they are

        s_update, _, peak_u = timed(ctx, update)
        s = s_members / k * n + s_update
        return rate(s, n * p, max(peak or 0, peak_u or 0) or None, members_timed=k, update_s=s_update)

    def evotune(noise: str) -> dict[str, Any]:
        cfg = build_config(None, {
            "model.name": spec, "task.name": "conciseness", "es.population": n, "es.sigma": 1e-3, "es.alpha": 5e-4,
            "es.noise": noise, "es.rank": 1, "es.prompts_per_iteration": p, "generation.max_new_tokens": mnt,
            "generation.batch_size": p if noise == "full" else n * p, "generation.min_new_tokens": mnt,
            "model.dtype": ctx.dtype, "model.device": str(dev)})
        params = make_params(model, cfg.es)
        evaluator = local_evaluator(model, tok, task, params, cfg)
        timed_members = members[:k] if noise == "full" else members
        s_eval, res, peak = timed(ctx, lambda: evaluator(timed_members, examples, prompts))
        fitness = res.fitness + [0.0] * (n - len(res.fitness)) if noise == "full" else res.fitness
        coeffs = tell(members, [f + 1e-3 * i for i, f in enumerate(fitness)], cfg.es.shaping)
        s_update, _, peak_u = timed(ctx, lambda: params.apply_update(coeffs or {}, cfg.es.alpha))
        s = (s_eval / k * n if noise == "full" else s_eval) + s_update
        ok = params.model_matches_master()
        if hasattr(evaluator, "close"):
            evaluator.close()
        return rate(s, n * p, max(peak or 0, peak_u or 0) or None, update_s=s_update, eval_s=s_eval,
                    members_timed=len(timed_members), model_matches_master=ok, times=res.times)

    guarded(ctx, "eager", "limit", limit)
    guarded(ctx, "eager", "limit_batch_p", limit_p)
    guarded(ctx, "eager", "naive", naive)
    guarded(ctx, "eager", "full_rank", lambda: evotune("full"))
    guarded(ctx, "eager", "low_rank", lambda: evotune("lowrank"))


def step_eager(ctx: Ctx) -> None:
    for spec in ctx.models:  # smallest first: a timeout takes the largest model's rows only
        measure_model(ctx, spec)


# -- the cuda tests ------------------------------------------------------------------------------------------
def step_cuda(ctx: Ctx, timeout: float) -> None:
    log = ctx.out.with_name(ctx.out.stem + ".cuda-tests.log")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"),
                                                        os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        text, rc, status = proc.stdout + proc.stderr, proc.returncode, "ok"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text, rc, status = out, None, "timeout"
    log.write_text(text)
    outcome: dict[str, list[str]] = {}
    for line in text.splitlines():
        word, _, test = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED") and test:
            times = int(test[1:test.index("]")]) if word == "SKIPPED" and test.startswith("[") else 1  # "SKIPPED [3] f: why"
            outcome.setdefault(word.lower(), []).extend([test.split(" - ")[0]] * times)
    ctx.emit("cuda", phase="tests", status=status if rc in (0, 5, None) or status == "timeout" else "error",
             returncode=rc, s=time.perf_counter() - t0, log=str(log),
             **{k: len(v) for k, v in outcome.items()}, failed_tests=outcome.get("failed", []) + outcome.get("error", []))


# -- compiled ------------------------------------------------------------------------------------------------
def step_compiled(ctx: Ctx) -> None:
    from throughput import fixed_prompts
    from torch._dynamo.utils import counters

    from evotune.backends.hf import generate
    from evotune.config import build_config
    from evotune.es import local_evaluator
    from evotune.es.params import make_params
    from evotune.es.strategy import ask
    from evotune.tasks import get_task

    n, p, mnt = ctx.n, ctx.p, ctx.new_tokens
    model, tok = load(ctx, ctx.compiled_model)
    task = get_task("conciseness")
    examples = task.batch("train", p, 0, 1)
    prompts = fixed_prompts(tok, p, ctx.prompt_tokens)
    base = {"model": ctx.compiled_model, "backend": ctx.backend, "n": n, "p": p}

    def gen() -> Any:
        return generate(model, tok, prompts * n, mnt, batch_size=n * p, compile_backend=ctx.backend,
                        min_new_tokens=mnt)

    plain: list[Any] = []

    def limit() -> dict[str, Any]:
        c0 = time.perf_counter()
        plain.extend(gen())  # compiles (setup, untimed in the rate)
        compile_s = time.perf_counter() - c0
        s, _, peak = timed(ctx, gen)
        return {**base, "s": s, "compile_s": compile_s, "compl_per_s": n * p / s, "peak_gpu_mb": peak}

    guarded(ctx, "compiled", "limit", limit)
    cfg = build_config(None, {
        "model.name": ctx.compiled_model, "task.name": "conciseness", "es.population": n, "es.sigma": 1e-3,
        "es.noise": "lowrank", "es.rank": 1, "es.prompts_per_iteration": p, "generation.max_new_tokens": mnt,
        "generation.batch_size": n * p, "generation.min_new_tokens": mnt, "generation.compile": True,
        "generation.compile_backend": ctx.backend, "model.dtype": ctx.dtype, "model.device": str(ctx.device)})
    evaluator = local_evaluator(model, tok, task, make_params(model, cfg.es), cfg)

    def low_rank() -> dict[str, Any]:
        c0 = time.perf_counter()
        evaluator(ask(1, 1, n, sigma=1e-3), examples, prompts)  # compiles with the hooks in place
        compile_s = time.perf_counter() - c0
        graphs = counters["stats"]["unique_graphs"]
        s, _, peak = timed(ctx, lambda: evaluator(ask(0, 1, n, sigma=1e-3), examples, prompts))
        added = counters["stats"]["unique_graphs"] - graphs
        return {**base, "s": s, "compile_s": compile_s, "compl_per_s": n * p / s, "peak_gpu_mb": peak,
                "graphs_added_by_second_population": added, "ok": added == 0}

    guarded(ctx, "compiled", "low_rank", low_rank)

    def moves() -> dict[str, Any]:
        big = ask(2, 1, n, False, 0.05)  # σ large enough that random weights change their tokens
        comps, _ = evaluator.generate_members(big, prompts)
        ref = [c.token_ids for c in (plain or gen())[:p]]
        moved = sum(1 for mc in comps if [c.token_ids for c in mc] != ref)
        return {**base, "members": n, "members_moved": moved, "ok": moved > 0}

    guarded(ctx, "compiled", "members_move", moves)
    evaluator.close()


# -- driver --------------------------------------------------------------------------------------------------
def summary(ctx: Ctx) -> dict[str, Any]:
    """The targets of docs/gpu.md, from this run's lines (None where a line is missing)."""
    by = {(r["step"], r.get("model"), r.get("phase") or r.get("check")): r for r in ctx.lines if r["status"] == "ok"}
    ratio = lambda a, b: a["compl_per_s"] / b["compl_per_s"] if a and b else None  # noqa: E731
    cm = ctx.compiled_model
    out: dict[str, Any] = {
        "low_rank_compiled_vs_compiled_limit": ratio(by.get(("compiled", cm, "low_rank")), by.get(("compiled", cm, "limit"))),
        "low_rank_compiled_vs_naive": ratio(by.get(("compiled", cm, "low_rank")), by.get(("eager", cm, "naive"))),
    }
    for spec in ctx.models:
        out[f"{spec}: full_rank_vs_limit_batch_p"] = ratio(by.get(("eager", spec, "full_rank")),
                                                           by.get(("eager", spec, "limit_batch_p")))
        out[f"{spec}: low_rank_vs_naive"] = ratio(by.get(("eager", spec, "low_rank")), by.get(("eager", spec, "naive")))
        full = by.get(("eager", spec, "full_rank"))
        out[f"{spec}: full_rank_iteration_s"] = full["s"] if full else None
    exact = [r for r in ctx.lines if r["step"] == "exact" and "check" in r]
    finished = all(r["status"] == "ok" for r in ctx.lines if r["step"] == "exact" and r.get("phase") == "done")
    out["exact_all_true"] = bool(exact) and finished and all(r["status"] == "ok" and r.get("ok") for r in exact)
    out["exact_false"] = [r["check"] for r in exact if not (r["status"] == "ok" and r.get("ok"))]
    out["errors"] = [f"{r['step']}/{r.get('model', '')}/{r.get('phase') or r.get('check')}"
                     for r in ctx.lines if r["status"] != "ok"]
    return out


def make_ctx(args: argparse.Namespace, out: Path, tmp: Path) -> Ctx | None:
    if args.dry_run:
        tiny = args.tiny
        if tiny is None:
            from evotune.backends.models import make_tiny

            tiny = str(make_tiny(tmp / "tiny", seed=0))
        ctx = Ctx(torch.device("cpu"), "float32", [tiny], tiny, n=4, p=2, prompt_tokens=8, new_tokens=6,
                  members_timed=args.members_timed, backend="eager", out=out, tmp=tmp)
    else:
        if not torch.cuda.is_available():
            print("gpu_quick: torch sees no CUDA GPU here; use --dry-run on a CPU machine", file=sys.stderr)
            return None
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        ctx = Ctx(torch.device("cuda"), "auto", list(GPU_MODELS), GPU_MODELS[0], n=32, p=8, prompt_tokens=64,
                  new_tokens=64, members_timed=args.members_timed, backend="inductor", out=out, tmp=tmp)
    if args.models:
        ctx.models = [m.strip() for m in args.models.split(",") if m.strip()]
    return ctx


def child(ctx: Ctx, step: str, limit: float) -> int:
    """One step in this (child) process: a soft timeout a few seconds before the parent's kill."""
    t0 = time.perf_counter()
    try:
        with alarm(limit):
            {"exact": step_exact, "eager": step_eager, "compiled": step_compiled}[step](ctx)
        ctx.emit(step, phase="done", s=time.perf_counter() - t0)
    except StepTimeout as exc:
        ctx.emit(step, phase="done", status="timeout", s=time.perf_counter() - t0, error=str(exc))
    except Exception as exc:  # a step that broke outside its measurements: one line
        ctx.emit(step, phase="done", status="error", s=time.perf_counter() - t0,
                 error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="results (JSON lines, appended); default $OUT/gpu_quick.jsonl")
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of {','.join(STEPS)}")
    ap.add_argument("--models", default=None, help="eager step's models (default: the four arch: models)")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU with a tiny model and tiny sizes")
    ap.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every step's timeout")
    ap.add_argument("--members-timed", type=int, default=2, help="members timed for per-member costs (scaled to N)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one step here
    ap.add_argument("--limit", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tiny", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # throughput.fixed_prompts
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}: choose from {', '.join(STEPS)}")
    out = Path(args.out or Path(os.environ.get("OUT", tempfile.gettempdir())) / "gpu_quick.jsonl").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_quick-"))
    ctx = make_ctx(args, out, tmp)
    if ctx is None:
        return 2
    if args.child:
        return child(ctx, args.child, args.limit or 60.0)
    timeouts = DRY_TIMEOUTS if args.dry_run else GPU_TIMEOUTS
    start = out.stat().st_size if out.is_file() else 0
    t_all, c_all = time.perf_counter(), time.process_time()
    ctx.emit("start", argv=sys.argv[1:] if argv is None else argv, dry_run=args.dry_run, steps=steps,
             timeouts={s: timeouts[s] * args.timeout_scale for s in steps})
    for step in steps:
        limit = timeouts[step] * args.timeout_scale
        t0 = time.perf_counter()
        if step == "cuda":
            step_cuda(ctx, limit)
            continue
        # each step in its own process: a timeout can always kill it (SIGALRM waits for Python code, which a
        # compile or a kernel may not reach for a while), and a 7B model's memory is the OS's again after it
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--limit", str(limit), "--out", str(out),
               "--members-timed", str(args.members_timed)]
        cmd += ["--dry-run", "--tiny", ctx.compiled_model] if args.dry_run else []
        cmd += ["--models", ",".join(ctx.models)] if args.models else []
        try:
            rc = subprocess.run(cmd, timeout=limit + 10).returncode
            if rc != 0:
                ctx.emit(step, phase="done", status="error", s=time.perf_counter() - t0, error=f"exit code {rc}")
        except subprocess.TimeoutExpired:
            ctx.emit(step, phase="done", status="timeout", s=time.perf_counter() - t0, error=f"killed after {limit + 10:.0f} s")
    ctx.lines = [json.loads(x) for x in out.read_text()[start:].splitlines() if x.strip()]
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ctx.emit("summary", s=time.perf_counter() - t_all,
             cpu_s=time.process_time() - c_all + children.ru_utime + children.ru_stime, **summary(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
