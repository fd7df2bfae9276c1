"""`evotune train ... --estimate`: what a run will cost, measured on this machine before committing to it.

Times one member (perturb, generate, score, on the configured prompts and samples), one update (N
seeds' noise regenerated and applied, the optimizer's state allocated), one held-out evaluation
and one checkpoint write, then multiplies by what the config asks for. Nothing is written to the
run directory. Completions are counted exactly; the checkpoint's size is measured by writing one
(to a temporary directory); peak memory is the process's peak RSS after all of it.

What it cannot see: completion lengths change as training goes (conciseness shortens them, so
later iterations get cheaper), other jobs on the machine, and Ray workers (it times in-process).
`ERROR` is the relative error the wall-time figures claim; `benchmarks/estimate_check.py` measures the
actual error against a real run of configs/demo.yaml (docs/algorithms.md).
"""

from __future__ import annotations

import math
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evotune.backends.models import load_model
from evotune.config import TrainConfig
from evotune.es import local_evaluator
from evotune.es.params import make_params
from evotune.es.strategy import ask
from evotune.evaluation import evaluate
from evotune.tasks import build_task
from evotune.trainers.frame import set_threads

ERROR = 0.5  # the relative error the wall-time figures claim (checked by tests; measured by benchmarks/estimate_check.py)


@dataclass
class Estimate:
    """The measured unit costs and what the config multiplies them into (seconds, MB)."""

    method: str
    steps: int
    members_per_step: int
    member_s: float
    update_s: float
    eval_s: float
    evals: int
    checkpoint_write_s: float
    checkpoint_mb: float
    checkpoints_kept: int
    completions_per_step: int
    completions: int
    step_s: float
    run_s: float
    peak_rss_mb: float
    error: float = ERROR

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def disk_mb(self) -> float:
        return self.checkpoint_mb * self.checkpoints_kept


def checkpoint_count(cfg: TrainConfig, steps: int) -> int:
    """How many checkpoints a run writes: every `checkpoint_every` steps, and the last (counted, not listed:
    an estimate of a huge run must not build a list of its steps)."""
    every = cfg.checkpoint_every
    return steps // every + (1 if steps % every else 0)


def eval_count(cfg: TrainConfig, steps: int) -> int:
    """How many evaluations a run makes: at step 0, every `eval.every` steps, and the last."""
    every = cfg.eval.every
    return 1 + (steps // every + (1 if steps % every else 0) if every else 1)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def estimate(cfg: TrainConfig, timed_members: int = 2) -> Estimate:
    """Measure one member, one update, one eval and one checkpoint of `cfg`, and scale them to the run."""
    from evotune.runs.rundir import RunDir

    set_threads(cfg.threads)
    es, randopt = cfg.es, cfg.method == "randopt"
    model, tok = load_model(cfg.model.name, cfg.model.dtype, cfg.model.device)
    task = build_task(cfg.task)
    params = make_params(model, es, cfg.seed)
    evaluator = local_evaluator(model, tok, task, params, cfg)
    batch = task.batch("train", es.prompts_per_iteration, cfg.seed, 1)
    prompts = [task.render(e, tok) for e in batch]
    pop = ask(cfg.seed, 1, es.population, es.antithetic, es.sigma)

    t0 = time.perf_counter()
    evaluate(model, tok, task, "eval", cfg.generation.max_new_tokens, cfg.generation.batch_size, cfg.eval.limit)
    eval_s = time.perf_counter() - t0  # also warms generation up before the members are timed
    n_timed = min(timed_members, len(pop))
    t0 = time.perf_counter()
    res = evaluator(pop[:n_timed], batch, prompts)
    member_s = (time.perf_counter() - t0) / n_timed
    update_s = 0.0
    if not randopt:  # N seeds' noise, the optimizer (its state allocated) and a clip's extra pass
        t0 = time.perf_counter()
        params.apply_update({m.seed: float(i % 3 - 1) for i, m in enumerate(pop)}, es.alpha, es.clip_update_norm)
        update_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="evotune-estimate-") as tmp:
        t0 = time.perf_counter()
        lossy = any(p.dtype.itemsize != 4 for p in params.params.values())
        opt = params.optimizer.state_tensors() if params.optimizer.stateful else None
        RunDir(tmp).save_checkpoint(1, model, tok, {}, extra_tensors=dict(params.master) if lossy else None,
                                    optimizer_tensors=opt)
        ckpt_write_s = time.perf_counter() - t0
        ckpt_mb = dir_mb(Path(tmp) / "checkpoints")
        shutil.rmtree(tmp, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    per_member_completions = res.completions // n_timed
    if randopt:
        steps = math.ceil(es.population / cfg.randopt.members_per_step)
        members = cfg.randopt.members_per_step
        evals = 2 + min(cfg.randopt.top_k, es.population) * (cfg.randopt.top_k > 1)
        ckpts = 1
    else:
        steps, members = es.iterations, es.population + int(es.center_member)
        evals, ckpts = eval_count(cfg, steps), checkpoint_count(cfg, steps)
        ckpts = min(ckpts, cfg.keep_checkpoints or ckpts) + int(cfg.keep_best is not None)
    step_s = members * member_s + update_s
    total_members = es.population if randopt else steps * members
    n_ckpt_writes = 1 if randopt else checkpoint_count(cfg, steps)
    return Estimate(
        method=cfg.method, steps=steps, members_per_step=members, member_s=member_s, update_s=update_s,
        eval_s=eval_s, evals=evals, checkpoint_write_s=ckpt_write_s, checkpoint_mb=ckpt_mb, checkpoints_kept=ckpts,
        completions_per_step=members * per_member_completions, completions=total_members * per_member_completions,
        step_s=step_s, run_s=(es.population * member_s if randopt else steps * step_s) + evals * eval_s
        + n_ckpt_writes * ckpt_write_s, peak_rss_mb=peak,
    )


def report(e: Estimate) -> str:
    """The estimate as the few lines `--estimate` prints."""
    unit = "step" if e.method == "randopt" else "iteration"
    pm = f"±{e.error:.0%}"
    return "\n".join([
        f"measured here: one member {e.member_s:.2f} s, one update {e.update_s:.2f} s, one held-out eval "
        f"{e.eval_s:.2f} s, one checkpoint {e.checkpoint_mb:.0f} MB in {e.checkpoint_write_s:.2f} s",
        f"per {unit}: {e.step_s:.1f} s ({pm}), {e.members_per_step} members, {e.completions_per_step} completions",
        f"whole run: {e.steps} {unit}s + {e.evals} evals ≈ {e.run_s / 60:.1f} min ({pm}), "
        f"{e.completions} training completions",
        f"peak memory ≈ {e.peak_rss_mb:.0f} MB RSS; checkpoints on disk ≈ {e.disk_mb:.0f} MB "
        f"({e.checkpoints_kept} × {e.checkpoint_mb:.0f} MB)",
    ])
