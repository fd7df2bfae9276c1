"""The ES trainer: the whole loop of one run, top to bottom.

    for each iteration k = 1..K:
        members  = ask(seed, k, N)                       # seeds only; noise is regenerated on demand
        fitness  = evaluate(members, mini-batch)         # perturb, greedy-generate, score, exact restore
        coeffs   = tell(members, fitness, shaping)       # z-score (default) or centered rank
        θ       += (α/N) · Σ coeffs_s · ε(s)             # fp32 master, then written to the model
        append (seeds, fitness) to trajectory.jsonl      # the commit point: replay/resume need only this

Checkpoints are a cache: the weights of iteration k are a pure function of the base model and the
first k trajectory rows (`replay`). Resume loads the newest checkpoint and replays the rows after it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evotune.backends.models import load_model
from evotune.config import TrainConfig
from evotune.es.evaluator import Evaluator, SequentialEvaluator
from evotune.es.params import EvolvingParams, select_params
from evotune.es.strategy import Member, ask, tell
from evotune.runs.logger import MetricsLogger
from evotune.runs.rundir import RunDir, append_jsonl, checkpoint_dirs, keep_rows, read_jsonl, read_state
from evotune.runs.session import Budget, heldout_eval, open_run, set_threads


class ESStateError(RuntimeError):
    """The run directory is inconsistent (trajectory does not match the config or checkpoints)."""


def members_of(row: dict[str, Any], cfg: TrainConfig) -> list[Member]:
    """The members a trajectory row records, checked against what `ask` derives from the config."""
    expect = ask(cfg.seed, row["step"], cfg.es.population, cfg.es.antithetic)
    got = [Member(i, s, g) for i, (s, g) in enumerate(zip(row["seeds"], row["signs"], strict=True))]
    if got != expect:
        raise ESStateError(f"trajectory row {row['step']} has seeds that this config does not produce")
    return got


def apply_row(params: EvolvingParams, row: dict[str, Any], cfg: TrainConfig) -> bool:
    """Apply one iteration's update from its recorded fitness (used live, by resume and by replay)."""
    coeffs = tell(members_of(row, cfg), row["fitness"], cfg.es.shaping)
    if coeffs is None:
        return False
    params.apply_update(coeffs, cfg.es.alpha / cfg.es.population)
    return True


def make_params(model: Any, cfg: TrainConfig) -> EvolvingParams:
    named = select_params(model, cfg.es.include, cfg.es.exclude)
    if cfg.es.noise == "lowrank":
        from evotune.es.lowrank import lowrank_noise_fn, lowrank_param_filter

        named = lowrank_param_filter(named, cfg.es.lowrank_vectors)
        return EvolvingParams(named, lowrank_noise_fn(cfg.es.rank, cfg.es.lowrank_vectors))
    return EvolvingParams(named)


def make_evaluator(
    model: Any, tok: Any, task: Any, params: EvolvingParams, cfg: TrainConfig, mnt: int
) -> Evaluator:
    if cfg.es.noise == "lowrank":
        from evotune.es.lowrank import BatchedLowRankEvaluator

        return BatchedLowRankEvaluator(model, tok, task, params, cfg.es, mnt, cfg.generation.batch_size)
    return SequentialEvaluator(model, tok, task, params, cfg.es.sigma, mnt, cfg.generation.batch_size)


def load_checkpoint_into(params: EvolvingParams, ckpt: Path) -> None:
    """Master weights from a checkpoint: fp32 extras if present (bf16 runs), else the model file."""
    from safetensors.torch import load_file

    extra = ckpt / "evotune_extra.safetensors"
    tensors = load_file(str(extra)) if extra.is_file() else {}
    if not tensors:
        for f in sorted(ckpt.glob("*.safetensors")):
            tensors.update(load_file(str(f)))
    params.load_master(tensors)


@dataclass
class ESTrainer:
    """Owns one ES run: directory, model, loop, evaluation cadence, checkpoints, resume."""

    cfg: TrainConfig
    resume: bool = False
    progress: bool = True
    evaluator_factory: Callable[..., Evaluator] | None = None  # e.g. Ray workers

    def train(self) -> dict[str, Any]:
        cfg, run = open_run(self.cfg, self.resume)
        self.cfg, self.run = cfg, run
        set_threads(cfg.threads)
        model, tok = load_model(cfg.model.name, cfg.model.dtype)
        task = cfg.task.build()
        mnt = cfg.generation.max_new_tokens or task.default_max_new_tokens
        params = make_params(model, cfg)
        factory = self.evaluator_factory or make_evaluator
        evaluator = factory(model, tok, task, params, cfg, mnt)
        budget, start = self._restore(run, params, cfg)
        hook = getattr(task, "iteration_hook", None)  # task-held run state, e.g. the safety task's λ
        if hook is not None:
            hook.restore([r.get("task_state", {}) for r in read_jsonl(run.trajectory)[:start]])
        logger = MetricsLogger(run, start_step=start + 1)
        self.model, self.tok, self.params = model, tok, params
        try:
            return self._loop(cfg, run, model, tok, task, params, evaluator, budget, start, logger)
        finally:
            logger.close()
            if hasattr(evaluator, "close"):
                evaluator.close()

    # -- resume -----------------------------------------------------------------------------
    def _restore(self, run: RunDir, params: EvolvingParams, cfg: TrainConfig) -> tuple[Budget, int]:
        """Bring the weights to the last committed iteration; drop rows written after it."""
        traj = read_jsonl(run.trajectory)
        for i, row in enumerate(traj, 1):
            if row["step"] != i:
                raise ESStateError(f"{run.trajectory}: row {i} is for step {row['step']}")
        last = len(traj)
        ckpts = [(k, d) for k, d in checkpoint_dirs(run.path) if k <= last]
        done = 0
        if ckpts:
            done, ckpt = ckpts[-1]
            load_checkpoint_into(params, ckpt)
            if read_state(ckpt).get("checksum") not in (None, params.checksum()):
                raise ESStateError(f"checkpoint {ckpt} does not match its recorded checksum")
        for row in traj[done:]:
            apply_row(params, row, cfg)
        # A kill may leave metrics/evals for an iteration whose trajectory row never landed.
        keep_rows(run.metrics, lambda r: r.get("step", 0) <= last)
        budget = Budget(**traj[-1]["budget"]) if traj else Budget()
        return budget, last

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self, cfg, run, model, tok, task, params, evaluator, budget, start, logger) -> dict[str, Any]:  # noqa: ANN001
        es = cfg.es
        if start == 0 and not (run.evals / "iter_000000.jsonl").exists():
            heldout_eval(cfg, run, logger, model, tok, task, 0, budget.as_metrics())
        last_eval: dict[str, Any] = {}
        stop_reason = budget.spent(cfg)
        bar = _progress(self.progress, es.iterations, start)
        k = start
        for k in range(start + 1, es.iterations + 1):
            if stop_reason:
                k -= 1
                break
            t0 = time.perf_counter()
            members = ask(cfg.seed, k, es.population, es.antithetic)
            examples = task.batch("train", es.prompts_per_iteration, cfg.seed, k)
            prompts = [task.render(e, tok) for e in examples]
            hook = getattr(task, "iteration_hook", None)
            if hook is not None:
                hook.begin(k)
            res = evaluator(members, examples, prompts)
            task_state = hook.end(k) if hook is not None else {}
            t1 = time.perf_counter()
            row = {
                "step": k,
                "seeds": [m.seed for m in members],
                "signs": [m.sign for m in members],
                "fitness": res.fitness,
                **({"task_state": task_state} if task_state else {}),
            }
            updated = apply_row(params, row, cfg)
            if not updated:
                warnings.warn(
                    f"iteration {k}: all {es.population} members have equal fitness; no update", stacklevel=2
                )
            t2 = time.perf_counter()
            budget.completions += res.completions
            budget.completion_tokens += res.completion_tokens
            budget.prompt_tokens += res.prompt_tokens
            budget.wall += t2 - t0
            append_jsonl(
                run.trajectory, {**row, "updated": updated, "budget": vars(budget).copy()}
            )  # commit point
            f = res.fitness
            metrics = {
                "step": k,
                "train/reward_mean": sum(f) / len(f),
                "train/reward_std": (sum((x - sum(f) / len(f)) ** 2 for x in f) / len(f)) ** 0.5,
                "train/reward_min": min(f),
                "train/reward_max": max(f),
                "train/accuracy": res.accuracy,
                "train/updated": int(updated),
                "train/sample": res.sample[:300],
                **{f"time/{n}": v for n, v in res.times.items()},
                **res.extra,
                **task_state,
                "time/update": t2 - t1,
                "time/iteration": t2 - t0,
                **budget.as_metrics(),
            }
            logger.log(metrics, k)
            stop_reason = budget.spent(cfg)
            final = k == es.iterations or stop_reason is not None
            if (cfg.eval.every and k % cfg.eval.every == 0) or final:
                last_eval = heldout_eval(cfg, run, logger, model, tok, task, k, budget.as_metrics())
            if k % cfg.checkpoint_every == 0 or final:
                run.save_checkpoint(
                    k,
                    model,
                    tok,
                    {"method": "es", "checksum": params.checksum(), "budget": vars(budget)},
                    extra_tensors=_masters_if_lossy(params, cfg),
                    keep_last=cfg.keep_checkpoints,
                )
            if bar is not None:
                bar.update(
                    1,
                    fitness=f"{metrics['train/reward_mean']:.3f}",
                    eval=f"{last_eval.get('reward_mean', float('nan')):.3f}",
                )
        if bar is not None:
            bar.close()
        summary = {
            "method": "es",
            "steps": k,
            "stop_reason": stop_reason or "iterations done",
            **budget.as_metrics(),
        }
        summary.update({f"eval/{n}": v for n, v in last_eval.items()})
        from evotune.runs.rundir import atomic_write_json

        atomic_write_json(run.path / "summary.json", summary)
        return summary


def _masters_if_lossy(params: EvolvingParams, cfg: TrainConfig) -> dict[str, Any] | None:
    """A bf16/fp16 model cannot hold the fp32 master exactly: save it beside the model."""
    return dict(params.master) if cfg.model.dtype != "float32" else None


def _progress(enabled: bool, total: int, start: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    class _Bar:
        def __init__(self) -> None:
            self.t = tqdm(total=total, initial=start, desc="ES", unit="it", dynamic_ncols=True)

        def update(self, n: int, **post: str) -> None:
            self.t.set_postfix(post, refresh=False)
            self.t.update(n)

        def close(self) -> None:
            self.t.close()

    return _Bar()
