"""What every trainer does around its update rule: the run directory, budget, metrics, evals, summary.

ES and GRPO both subclass `Trainer`, so their run directories, eval files, metric names, budget
counters, checkpoint cadence and summaries are the same code. A subclass declares what is its
own (`length`, `steps_name`, `own_dirs`, `rewind_loads_weights`) and supplies `setup` (model, task,
method state), `rewind` (back to the last committed step) and either `step` (ES: the frame owns the
loop) or its own loop that calls `after_step` (GRPO: TRL owns it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from evotune.backends.models import resolve_device
from evotune.checkpoints import STATE_FILE, checkpoint_dirs
from evotune.config import TrainConfig, load_run_config
from evotune.errors import ConfigError, RunStateError
from evotune.evaluation import check_prompts_fit, evaluate
from evotune.runs.lock import LOCK_FILE, RunLock
from evotune.runs.logger import MetricsLogger, check_trackers
from evotune.runs.metrics import (
    EVAL_PREFIX,
    STEP,
    TRAIN_REWARD_MEAN,
    Budget,
    StepStats,
    eval_metrics,
    eval_summary,
    is_eval_row,
    is_train_row,
)
from evotune.runs.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl

BASE_EVAL = "iter_000000.jsonl"  # the starting model's held-out rows (the `correct_lost` reference)


def best_rule(spec: str) -> tuple[str, bool]:
    """`keep_best` → (metrics key, whether lower is better): `reward_mean` → (eval/reward_mean, False)."""
    mode, _, name = spec.rpartition(":")
    name = name if name.startswith(EVAL_PREFIX) else f"{EVAL_PREFIX}{name}"
    return name, mode == "min"


def is_better(value: float, best: float | None, lower: bool) -> bool:
    """Strictly better (a tie keeps the earlier checkpoint); NaN is never better."""
    if value != value:
        return False
    return best is None or (value < best if lower else value > best)


def set_threads(threads: int | None) -> None:
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)


BUDGET_LENGTHS = frozenset({"budget.completions", "budget.tokens"})  # every method's: the frame owns the budget


def _changes(
    stored: dict[str, Any], given: dict[str, Any], lengths: frozenset[str] = BUDGET_LENGTHS,
    placement: frozenset[str] = frozenset(),
) -> tuple[list[str], list[str], list[str]]:
    """(settings that differ, lengths that shrink, lengths that grow) between stored and given config dumps.

    `lengths` are the dotted settings that only say how long a run trains (`es.iterations`); `placement`
    those that say where it computes, not what (`model.device`): free to change on resume.
    """
    changed, shrunk, grown = [], [], []
    for sec, val in given.items():
        if sec == "ray":  # where members run never changes the weights
            continue
        if not isinstance(val, dict):
            # how many checkpoints stay on disk never changes the weights (runs stored before it defaulted to 2: null)
            if sec not in ("run_dir", "threads", "report_to", "keep_checkpoints") and stored.get(sec) != val:
                changed.append(f"{sec}: {stored.get(sec)!r} -> {val!r}")
            continue
        for k, v in val.items():
            old = stored.get(sec, {}).get(k)
            if old == v or f"{sec}.{k}" in placement:
                continue
            if f"{sec}.{k}" not in lengths:
                changed.append(f"{sec}.{k}: {old!r} -> {v!r}")
            elif v is not None and (old is None or v < old):  # None = unlimited
                shrunk.append(f"{sec}.{k}: {old!r} -> {v!r}")
            else:
                grown.append(f"{sec}.{k}")
    return changed, shrunk, grown


def remove_temp_files(run: RunDir) -> None:
    """Temp files and directories that a killed atomic write left behind (only the lock holder calls this)."""
    for d in (run.path, run.path / "checkpoints", run.evals):
        if d.is_dir():
            for p in d.glob(".*.tmp*"):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def has_progress(run: RunDir, own_dirs: tuple[str, ...] = ()) -> bool:
    """Whether a run directory holds any committed step (trajectory row, checkpoint, a method's own
    state such as GRPO's `trl/`, or train row)."""
    if checkpoint_dirs(run.path) or any((run.path / d).exists() for d in own_dirs):
        return True
    if read_jsonl(run.trajectory, skip_corrupt=True):
        return True
    return any(is_train_row(r) for r in run.read_metrics())


def open_run(
    cfg: TrainConfig, resume: bool, lengths: frozenset[str] = BUDGET_LENGTHS, own_dirs: tuple[str, ...] = (),
    placement: frozenset[str] = frozenset(),
) -> tuple[TrainConfig, RunDir, RunLock]:
    """Lock the run directory, then create it or reopen it for `--resume` (its stored config wins).

    A resumed run may only lengthen (`lengths`: iterations/steps/budget, written back to config.yaml);
    any other difference, or a shorter length, is an error rather than a silent change of experiment.
    `own_dirs` are methods' own folders that mark a committed step (see `has_progress`); `placement`
    settings (where the run computes) may change on resume.
    """
    run = RunDir(cfg.run_dir)
    if resume and not run.exists():
        raise ConfigError(f"--resume: {run.path} is not a run directory (no config.yaml)")
    try:
        lock = RunLock(run.path).acquire()
    except PermissionError as exc:
        raise RunStateError(f"cannot write to run directory {run.path} ({exc.strerror}); choose a writable --run-dir") from None
    try:
        write = not resume
        if resume:
            stored = load_run_config(run.path)
            changed, shrunk, grown = _changes(stored.model_dump(), cfg.model_dump(), lengths, placement)
            if changed:
                raise ConfigError("--resume cannot change a run's settings (only lengthen it): " + "; ".join(changed))
            if shrunk:
                raise ConfigError("--resume can only lengthen a run, not shorten it: " + "; ".join(shrunk)
                                  + " (start a new run, or rebuild an earlier iteration with `evotune replay`)")
            write = bool(grown)  # the stored config is rewritten only to record a longer run
            remove_temp_files(run)
        elif run.path.exists() and any(p.name != LOCK_FILE for p in run.path.iterdir()):
            if not run.exists() or has_progress(run, own_dirs):
                raise ConfigError(
                    f"run directory {run.path} already holds a run: pass --resume or choose another --run-dir"
                )
            # A start killed before its first committed step: nothing to keep, so a corrected rerun may reuse it.
            warnings.warn(f"{run.path} holds a run that never finished a step; starting it afresh", stacklevel=2)
            for p in run.path.iterdir():
                if p.name != LOCK_FILE:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        if write:
            atomic_write_text(run.config, cfg.to_yaml())
    except BaseException:
        lock.release()
        raise
    return cfg, run, lock


def heldout_eval(
    cfg: TrainConfig, run: RunDir, logger: MetricsLogger, model: Any, tok: Any, task: Any, step: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Greedy held-out evaluation: rows to `evals/iter_K.jsonl`, summary to metrics as `eval/*`."""
    base_file = run.evals / BASE_EVAL
    base_rows = read_jsonl(base_file) if step > 0 and base_file.is_file() else None
    res = evaluate(
        model, tok, task, "eval", cfg.generation.max_new_tokens, cfg.generation.batch_size, cfg.eval.limit,
        base_rows=base_rows,
    )
    write_jsonl(run.evals / f"iter_{step:06d}.jsonl", res.rows)
    row: dict[str, Any] = {STEP: step, **extra, **eval_metrics(res.summary)}
    for i, r in enumerate(res.rows[: cfg.eval.samples]):
        row[f"{EVAL_PREFIX}sample_{i}"] = r["completion"][:300]
    logger.log(row, step)
    if res.summary.get("hacking"):
        warnings.warn(f"step {step}: possible reward hacking — {res.summary['hacking_reason']}", stacklevel=2)
    return res.summary


def _every_method(attr: str) -> set[str]:
    """What any method (every `Trainer` subclass) declares under `attr`.

    A run's config holds every method's section and a folder may hold another method's run, so the
    resume check and the fresh-start check must know them all (`evotune.trainers` imports every method).
    """
    out: set[str] = set()
    todo: list[type[Trainer]] = [Trainer]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        own = vars(cls).get(attr)
        out |= {own} if isinstance(own, str) else set(own or ())
    return out


class Trainer(ABC):
    """One run of one method: owns the directory, the cadence of evals and checkpoints, the summary."""

    # -- what a method declares --------------------------------------------------------------------
    method: ClassVar[str]
    length: ClassVar[str]  # the dotted setting that says how many steps it trains (a resume may raise it)
    steps_name: ClassVar[str] = "steps"  # what its steps are called in the summary ("iterations done")
    unit: ClassVar[str] = "it"  # the progress bar's unit
    own_dirs: ClassVar[tuple[str, ...]] = ()  # its own folders in the run directory (GRPO: trl/)
    # dotted settings that say where it computes, not what: free to change on resume (the trajectory's
    # recorded device type is checked when weights are rebuilt, so a change of device type still stops)
    placement: ClassVar[tuple[str, ...]] = ("model.device",)
    rewind_loads_weights: ClassVar[bool] = True  # False: `rewind` only finds where to resume (GRPO: TRL loads them)

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.resume_run, self.progress = cfg, resume, progress
        self.budget = Budget()
        self.last_eval: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.steps_done = 0
        self.bar: Any = None
        self.hook: Any = None
        self.task_state: dict[str, Any] = {}
        self.best: dict[str, Any] | None = None  # keep_best: {iteration, metric, value} of checkpoints/best

    # -- what a method supplies ------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """How many steps the run trains: the value of its `length` setting."""
        section, _, name = self.length.partition(".")
        return int(getattr(getattr(self.cfg, section), name))

    @abstractmethod
    def setup(self) -> None:
        """Load model, tokenizer and task into `self.model`, `self.tok`, `self.task`; build method state."""

    @abstractmethod
    def rewind(self) -> int:
        """Back to the last committed step: drop what was written after it, set `self.budget` (and, with
        `rewind_loads_weights`, the weights) to that step's; return that step (0 for a fresh run)."""

    def step(self, k: int) -> StepStats:
        """One iteration (methods whose loop the frame owns)."""
        raise TypeError(f"{type(self).__name__} runs its own loop and calls after_step")

    def commit(self, k: int, stats: StepStats) -> None:  # noqa: B027  (optional hook)
        """Make step k durable before anything else is written about it (ES: the trajectory row)."""

    def optimizer_tensors(self) -> dict[str, Any] | None:
        """Optimizer state saved beside a checkpoint (ES momentum / Adam moments); None if stateless."""
        return None

    def committed_task_states(self, start: int) -> list[dict[str, Any]]:
        """What a task's `iteration_hook` recorded for steps 1..start (default: their metrics rows)."""
        return [r for r in self.run.read_metrics() if is_train_row(r) and r[STEP] <= start]

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(state for evotune_state.json, extra tensors) of a checkpoint."""
        return {}, None

    def checkpoint_writer(self) -> Callable[[Path], None] | None:
        """What writes a checkpoint's weights into its directory (None: `model.save_pretrained`)."""
        return None

    def run_loop(self, start: int) -> None:
        for k in range(start + 1, self.total_steps + 1):
            if self.stop_reason:
                break
            t0 = time.perf_counter()
            stats = self.step(k)
            stats.times["iteration"] = time.perf_counter() - t0
            self.after_step(k, stats)

    # -- the frame ---------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Lock the run, bring it to its last committed step, finish that step's lost work, train on.

        The lock is held until the summary is written (`locked`); the model, logger and method
        resources live for the training only (`started`).
        """
        resolve_device(self.cfg.model.device)  # no GPU for --device cuda: fail before a run directory exists
        check_trackers(self.cfg.report_to)  # a tracker misconfigured: one line, before anything is written
        with self.locked():
            with self.started() as start:
                self.train_from(start)
            return self.write_summary()

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Open the run directory under its lock (one writer per run), held until the block ends.

        A fresh run that fails before its first committed step is removed (with the directory itself
        when this start created it), so the corrected command can simply be run again.
        """
        fresh, created = not self.resume_run, not Path(self.cfg.run_dir).exists()
        lengths = BUDGET_LENGTHS | _every_method("length")
        self.cfg, self.run, lock = open_run(self.cfg, self.resume_run, lengths, tuple(sorted(_every_method("own_dirs"))),
                                            frozenset(_every_method("placement")))
        try:  # open_run holds the lock already
            yield self.run
        except Exception:
            if fresh and self.steps_done == 0:
                self.discard_run()
                lock.release()
                if created:  # leave no trace of a start that never happened
                    (self.run.path / LOCK_FILE).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        self.run.path.rmdir()
            raise
        finally:
            lock.release()  # idempotent

    @contextlib.contextmanager
    def started(self) -> Iterator[int]:
        """Model, task and metrics logger at the last committed step, which it yields; the logger, the
        progress bar and the method's resources (`close`) are closed on the way out."""
        set_threads(self.cfg.threads)
        self.setup()
        check_prompts_fit(self.model, self.tok, self.task, self.task.max_new_tokens(self.cfg.generation.max_new_tokens),
                          self.cfg.eval.limit, self.cfg.generation.compile)
        start = self.steps_done = self.rewind()
        self.best = self.read_best()
        self.logger = MetricsLogger(self.run, start_step=start + 1, report_to=self.cfg.report_to,
                                    config=self.cfg.model_dump(mode="json"))
        try:
            yield start
        finally:
            self.logger.close()
            if self.bar is not None:
                self.bar.close()
            self.close()

    def train_from(self, start: int) -> None:
        """Finish committed step `start`'s lost work (eval, checkpoint), then train the remaining steps."""
        self.stop_reason = self.budget.spent(self.cfg)
        # A task may hold run state its reward depends on (the safety task's Lagrangian λ):
        # rebuilt from what the committed steps recorded, opened for the next step after any
        # held-out eval (whose scores must not count towards a training step).
        self.hook = getattr(self.task, "iteration_hook", None)
        if self.hook is not None:
            self.hook.resume(self.committed_task_states(start))
        self.finish_step(start, resumed=True)
        if self.hook is not None:
            self.hook.begin(start + 1)
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total_steps, initial=start, desc=self.method.upper(), unit=self.unit,
                            dynamic_ncols=True)
        self.run_loop(start)

    def discard_run(self) -> None:
        """Remove a fresh run directory that never committed a step (open_run found it empty)."""
        for p in self.run.path.iterdir():
            if p.name != LOCK_FILE:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def after_step(self, k: int, stats: StepStats) -> None:
        """Budget, commit, the shared metrics row, then held-out eval and checkpoint when due."""
        self.task_state = self.hook.end(k) if self.hook is not None else {}
        stats.extra.update(self.task_state)
        self.budget.add(stats)
        self.commit(k, stats)
        self.steps_done = k
        row = stats.row(k, self.budget)
        self.logger.log(row, k)
        self.stop_reason = self.budget.spent(self.cfg)
        self.finish_step(k)
        if self.hook is not None:
            self.hook.begin(k + 1)
        if self.bar is not None:
            post = {"reward": f"{row[TRAIN_REWARD_MEAN]:.3f}"}
            if "reward_mean" in self.last_eval:  # no eval yet (a resume between evals): show none, not nan
                post["eval"] = f"{self.last_eval['reward_mean']:.3f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    def finish_step(self, k: int, resumed: bool = False) -> None:
        """The held-out eval and checkpoint due after committed step k.

        On resume (`resumed`), only what a crash lost is redone: a due eval without its metrics row,
        a due checkpoint that is missing, a train row that never landed (methods whose `rewind`
        leaves the weights at step k; GRPO's TRL loop loads them later, so it skips this).
        """
        if resumed and k > 0 and not self.rewind_loads_weights:
            return
        final = k >= self.total_steps or self.stop_reason is not None
        eval_due = k == 0 or (self.cfg.eval.every and k % self.cfg.eval.every == 0) or final
        ckpt_due = k > 0 and (k % self.cfg.checkpoint_every == 0 or final)
        if resumed:
            logged = self.run.read_metrics() if k > 0 or eval_due else []
            steps = {r.get(STEP) for r in logged if is_train_row(r)}
            if k > 0 and k not in steps and (row := self.lost_row(k)) is not None:
                self.logger.log(row, k)
            evals = {r.get(STEP) for r in logged if is_eval_row(r)}
            eval_due = eval_due and (k not in evals or not (self.run.evals / f"iter_{k:06d}.jsonl").is_file())
            ckpt_due = ckpt_due and k not in dict(checkpoint_dirs(self.run.path))
        value = None
        if eval_due:
            self.last_eval = self.evaluate(k)
            value = self.eval_value(self.last_eval, k)
        elif resumed and self.cfg.keep_best:  # a crash between this step's eval and its best checkpoint
            row = next((r for r in reversed(logged) if r.get(STEP) == k and is_eval_row(r)), {})
            value = self.eval_value(eval_summary(row), k)
        if ckpt_due:
            self.save_checkpoint(k)
        if value is not None and is_better(value, self.best and self.best["value"], best_rule(self.cfg.keep_best)[1]):
            self.save_best(k, value)

    def save_checkpoint(self, k: int, path: Path | None = None, state: dict[str, Any] | None = None) -> None:
        extra_state, extra = self.checkpoint_state()
        self.run.save_checkpoint(
            k, self.model, self.tok, {"method": self.method, "budget": vars(self.budget).copy(), **extra_state,
                                      **(state or {})},
            extra_tensors=extra, keep_last=None if path else self.cfg.keep_checkpoints,
            optimizer_tensors=self.optimizer_tensors(), write_model=self.checkpoint_writer(), path=path,
        )

    # -- keep_best ---------------------------------------------------------------------------------
    def eval_value(self, summary: dict[str, Any], k: int) -> float | None:
        """The `keep_best` metric of an eval summary (None without keep_best); a metric evals lack is an error."""
        if not self.cfg.keep_best or not summary:
            return None
        key = best_rule(self.cfg.keep_best)[0][len(EVAL_PREFIX):]
        if key not in summary:
            raise ConfigError(f"keep_best: the eval at step {k} has no metric {key!r}; "
                              f"use one of {', '.join(sorted(n for n, v in summary.items() if isinstance(v, float)))}")
        return float(summary[key])

    def save_best(self, k: int, value: float) -> None:
        """Point checkpoints/best at the weights of step k (hard links to iter_k when it was just written)."""
        self.best = {"iteration": k, "metric": best_rule(self.cfg.keep_best or "")[0], "value": value}
        ckpt = dict(checkpoint_dirs(self.run.path)).get(k)
        if ckpt is not None:
            self.run.link_checkpoint(ckpt, self.run.best, {"best": self.best})
        else:
            self.save_checkpoint(k, self.run.best, {"best": self.best})

    def read_best(self) -> dict[str, Any] | None:
        """What checkpoints/best holds (a resume continues from it); None when there is none or no keep_best."""
        state = self.run.best / STATE_FILE
        if not self.cfg.keep_best or not state.is_file():
            return None
        try:
            best = json.loads(state.read_text()).get("best")
        except ValueError:
            return None
        if not best or best.get("metric") != best_rule(self.cfg.keep_best)[0] or best["iteration"] > self.steps_done:
            return None
        return best

    def lost_row(self, k: int) -> dict[str, Any] | None:
        """The train metrics row of committed step k, rebuilt from what was committed (None: cannot)."""
        return None

    def evaluate(self, k: int) -> dict[str, Any]:
        """Greedy held-out eval in eval mode (no dropout), then back to the model's mode."""
        was_training = self.model.training
        self.model.train(False)
        try:
            return heldout_eval(self.cfg, self.run, self.logger, self.model, self.tok, self.task, k,
                                self.budget.as_metrics())
        finally:
            self.model.train(was_training)

    def write_summary(self) -> dict[str, Any]:
        if not self.last_eval:  # nothing left to train (resumed after the end): report the last eval on file
            evals = [r for r in self.run.read_metrics() if is_eval_row(r)]
            self.last_eval = {k: v for k, v in eval_summary(evals[-1] if evals else {}).items()
                              if not k.startswith("sample_")}  # the keys evaluate returns
        summary = {
            "method": self.method,
            "steps": self.steps_done,
            "stop_reason": self.stop_reason or f"{self.steps_name} done",
            **self.budget.as_metrics(),
            **eval_metrics(self.last_eval),
        }
        if self.best is not None:
            summary["best"] = {**self.best, "path": str(self.run.best.relative_to(self.run.path))}
        summary.update(self.summary_extra())
        old = self.run.summary
        with contextlib.suppress(ValueError, UnicodeDecodeError):  # a resume never drops what an earlier summary
            earlier = json.loads(old.read_text()) if old.is_file() else {}  # held; a damaged one is replaced
            summary = {**earlier, **summary} if isinstance(earlier, dict) else summary
        atomic_write_json(old, summary)
        return summary

    def summary_extra(self) -> dict[str, Any]:
        """Method-specific keys for summary.json (RandOpt: its vote and chosen members)."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release method resources (e.g. Ray workers)."""
