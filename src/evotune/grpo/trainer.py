"""The GRPO baseline: TRL's `GRPOTrainer`, driven so its runs are comparable with ES runs.

What is shared with ES (so a comparison measures the method, not the plumbing):
    prompts      step k trains on `task.batch("train", prompts_per_step, seed, k)`, the same seeded
                 mini-batch rule ES uses for iteration k; the chat template is applied by the task
    reward       each completion's token ids go through `decode_completion` and `task.score`
    evaluation   `heldout_eval` (greedy, same decode path) at step 0, every `eval.every` and at the end
    budget       completions, prompt and completion tokens, wall time; `--budget` stops the run
    run dir      metrics.jsonl names, evals/iter_K.jsonl, checkpoints/iter_K (HF safetensors), summary.json

What is GRPO's own: `RUN/trl/checkpoint-K` (TRL's optimizer, scheduler and RNG state — what `--resume`
continues from) and the `grpo/*` metrics (loss, kl, entropy, clip ratio, reward std, lr, grad norm).

Data order does not come from TRL's shuffling sampler: the dataset is the concatenation of the per-step
batches and TRL reads it in order (`shuffle_dataset=False`), so a resumed run skips exactly the batches
already trained on.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotune.config import ConfigError, TrainConfig
from evotune.runs.rundir import RunDir, atomic_write_json, checkpoint_dirs, keep_rows, read_jsonl, read_state
from evotune.runs.session import Budget, heldout_eval, open_run, set_threads

# Loss types whose defaults work with token-level importance sampling (luspo/vespo need other settings).
SUPPORTED_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
# Schedules that need no extra arguments and no metric to follow.
SUPPORTED_SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt",
)
_TRL_CKPT_PREFIX = "checkpoint-"
# TRL log key -> evotune metric name (anything else numeric becomes grpo/<key>).
_TRL_NAMES = {
    "loss": "grpo/loss",
    "grad_norm": "grpo/grad_norm",
    "learning_rate": "grpo/learning_rate",
    "kl": "grpo/kl",
    "entropy": "grpo/entropy",
    "reward": "grpo/reward_mean",
    "reward_std": "grpo/reward_std",
    "frac_reward_zero_std": "grpo/frac_reward_zero_std",
    "clip_ratio/region_mean": "grpo/clip_ratio",
    "clip_ratio/low_mean": "grpo/clip_ratio_low",
    "clip_ratio/high_mean": "grpo/clip_ratio_high",
    "completions/mean_length": "grpo/completion_length",
    "completions/clipped_ratio": "grpo/truncated_ratio",
    "num_tokens": "grpo/num_tokens",
    "step_time": "time/trl_step",
}


# -- validation -------------------------------------------------------------------------------------
def completions_per_step(cfg: TrainConfig) -> int:
    return cfg.grpo.prompts_per_step * cfg.grpo.num_generations


MAX_MICRO_BATCH = 8  # completions per backward pass when grpo.gradient_accumulation_steps is not set


def accumulation_steps(cfg: TrainConfig) -> int:
    """grpo.gradient_accumulation_steps, or the fewest equal micro-batches of ≤ MAX_MICRO_BATCH completions."""
    if cfg.grpo.gradient_accumulation_steps is not None:
        return cfg.grpo.gradient_accumulation_steps
    batch = completions_per_step(cfg)
    return next(d for d in range(1, batch + 1) if batch % d == 0 and batch // d <= MAX_MICRO_BATCH)


def validate_grpo(cfg: TrainConfig) -> None:
    """Reject settings TRL would reject (or silently mis-handle) before any model is loaded."""
    g = cfg.grpo
    if cfg.method != "grpo":
        raise ConfigError(f"method is {cfg.method!r}; a GRPO run needs method: grpo (use `evotune train grpo`)")
    batch = completions_per_step(cfg)
    if batch % g.num_generations:  # cannot happen with prompts_per_step × K, kept as TRL's own invariant
        raise ConfigError(f"generation batch {batch} is not divisible by grpo.num_generations={g.num_generations}")
    ga = accumulation_steps(cfg)
    if batch % ga:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        raise ConfigError(
            f"a GRPO step generates grpo.prompts_per_step × grpo.num_generations = {g.prompts_per_step} × "
            f"{g.num_generations} = {batch} completions, which grpo.gradient_accumulation_steps={ga} cannot split "
            f"into equal micro-batches: set grpo.gradient_accumulation_steps to a divisor of {batch} "
            f"({', '.join(map(str, divisors))}) or change grpo.prompts_per_step / grpo.num_generations"
        )
    if g.loss_type not in SUPPORTED_LOSSES:
        raise ConfigError(f"grpo.loss_type {g.loss_type!r} is not supported; use one of {', '.join(SUPPORTED_LOSSES)}")
    if g.lr_scheduler not in SUPPORTED_SCHEDULERS:
        raise ConfigError(
            f"grpo.lr_scheduler {g.lr_scheduler!r} is not supported; use one of {', '.join(SUPPORTED_SCHEDULERS)}"
        )


def validate_task_fit(cfg: TrainConfig, task: Any) -> None:
    """Each step needs `prompts_per_step` distinct train prompts."""
    n_train = len(task.split("train"))
    if cfg.grpo.prompts_per_step > n_train:
        raise ConfigError(
            f"grpo.prompts_per_step={cfg.grpo.prompts_per_step} exceeds the {n_train} train prompts of task "
            f"{cfg.task.name!r}: lower grpo.prompts_per_step or raise task.n_train"
        )


# -- data -------------------------------------------------------------------------------------------
@dataclass
class StepData:
    """The rows TRL reads, in training order, plus what the reward needs to find each row's example."""

    prompts: list[str]
    example_index: list[int]
    step: list[int]
    examples: list[Any]  # the train split; `example_index` points into it
    prompt_tokens: list[int]  # per train example, counted as ES counts them (no special tokens added)


def build_step_data(cfg: TrainConfig, task: Any, tok: Any) -> StepData:
    """Rows for steps 1..grpo.steps: step k's prompts are ES's mini-batch rule for iteration k."""
    train = list(task.split("train"))
    pos = {id(e): i for i, e in enumerate(train)}
    rendered = [task.render(e, tok) for e in train]
    counts = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in rendered]
    limit = cfg.grpo.max_prompt_length
    if limit is not None and counts and max(counts) > limit:
        worst = max(range(len(counts)), key=counts.__getitem__)
        raise ConfigError(
            f"train prompt {train[worst].id!r} is {counts[worst]} tokens, longer than grpo.max_prompt_length={limit}: "
            f"raise grpo.max_prompt_length to at least {max(counts)} (prompts are never truncated)"
        )
    prompts, index, steps = [], [], []
    for k in range(1, cfg.grpo.steps + 1):
        for e in task.batch("train", cfg.grpo.prompts_per_step, cfg.seed, k):
            i = pos[id(e)]
            prompts.append(rendered[i])
            index.append(i)
            steps.append(k)
    return StepData(prompts, index, steps, train, counts)


# -- per-step accounting ----------------------------------------------------------------------------
@dataclass
class StepStats:
    """What the reward function saw during one optimizer step; reset by the callback each step."""

    rewards: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    sample: str = ""
    t_generate: float = 0.0
    t_score: float = 0.0

    def reset(self) -> None:
        self.__dict__.update(StepStats().__dict__)


def make_reward_fn(task: Any, tok: Any, stops: set[int], max_new_tokens: int, data: StepData, stats: StepStats) -> Any:
    """A TRL reward callable that scores exactly as ES does: `decode_completion` then `task.score`."""
    from evotune.backends.hf import decode_completion

    def task_reward(
        prompts: list[str], completion_ids: list[list[int]], example_index: list[int], step: list[int], **kw: Any
    ) -> list[float]:
        t0 = time.perf_counter()
        state = kw.get("trainer_state")
        if state is not None and set(step) != {state.global_step + 1}:
            raise RuntimeError(f"data order broken: rows of steps {sorted(set(step))} at step {state.global_step + 1}")
        out = []
        comps = [decode_completion(tok, ids, stops, max_new_tokens) for ids in completion_ids]
        scored = task.score_batch([c.text for c in comps], [data.examples[i] for i in example_index])
        for c, i, r in zip(comps, example_index, scored, strict=True):
            out.append(r.score)
            stats.rewards.append(r.score)
            stats.correct.append(r.correct)
            stats.completion_tokens += c.n_tokens
            stats.prompt_tokens += data.prompt_tokens[i]
            if not stats.sample:
                stats.sample = c.text
        stats.t_score += time.perf_counter() - t0
        return out

    return task_reward


# -- TRL checkpoints (resume) -----------------------------------------------------------------------
def trl_checkpoints(run: RunDir) -> list[tuple[int, Path]]:
    """Complete TRL checkpoints (TRL writes trainer_state.json last), oldest first."""
    root = run.path / "trl"
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        num = d.name[len(_TRL_CKPT_PREFIX):]
        if d.name.startswith(_TRL_CKPT_PREFIX) and num.isdigit() and (d / "trainer_state.json").is_file():
            out.append((int(num), d))
    return sorted(out)


def _drop_after(run: RunDir, last: int) -> None:
    """Forget everything a killed or stopped run wrote past its last resumable step."""
    root = run.path / "trl"
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith(_TRL_CKPT_PREFIX) and not (d / "trainer_state.json").is_file():
                shutil.rmtree(d, ignore_errors=True)  # a save cut short
    keep_rows(run.metrics, lambda r: r.get("step", 0) <= last)
    for k, d in checkpoint_dirs(run.path):
        if k > last:
            shutil.rmtree(d, ignore_errors=True)
    if run.evals.is_dir():
        for f in run.evals.glob("iter_*.jsonl"):
            if f.stem[5:].isdigit() and int(f.stem[5:]) > last:
                f.unlink()


def _budget_at(run: RunDir, step: int) -> Budget:
    """Budget spent up to `step`: from its evotune checkpoint, else from its metrics row."""
    for k, d in checkpoint_dirs(run.path):
        if k == step and "budget" in (state := read_state(d)):
            return Budget(**state["budget"])
    for r in reversed(read_jsonl(run.metrics)):
        if r.get("step") == step and "train/reward_mean" in r:
            return Budget(
                int(r["budget/completions"]), int(r["budget/completion_tokens"]), int(r["budget/prompt_tokens"]),
                float(r["time/wall"]),
            )
    return Budget()


# -- the TRL pieces (built lazily: importing TRL takes seconds) -------------------------------------
@functools.cache
def _trl_classes() -> tuple[type, type]:
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    class EvotuneGRPOTrainer(GRPOTrainer):
        """TRL's trainer with two evotune rules: prompts tokenised as ES does, generation timed."""

        evotune_stats: StepStats

        def _tokenize_prompts(self, prompts: list) -> Any:
            # Text prompts already carry the chat template; add no BOS/special tokens, exactly like ES.
            if prompts and isinstance(prompts[0], str):
                return self.processing_class(text=prompts, add_special_tokens=False)["input_ids"], None, {}
            return super()._tokenize_prompts(prompts)

        def _generate(self, prompts: list) -> Any:
            t0 = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                self.evotune_stats.t_generate += time.perf_counter() - t0

    class RunCallback(TrainerCallback):
        """Per step: budget and stop rule, the shared metrics row, held-out eval and evotune checkpoint."""

        def __init__(self, owner: _Loop) -> None:
            self.o = owner
            self.t0 = 0.0
            self.t_iter = 0.0
            self.pending: int | None = None
            self.final = False
            self.save = False

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.t0 = time.perf_counter()
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            o, k = self.o, state.global_step
            b, s = o.budget, o.stats
            b.completions += len(s.rewards)
            b.completion_tokens += s.completion_tokens
            b.prompt_tokens += s.prompt_tokens
            self.t_iter = time.perf_counter() - self.t0
            b.wall += self.t_iter
            o.stop_reason = b.spent(o.cfg)
            if o.stop_reason:
                control.should_training_stop = True
            self.final = k >= state.max_steps or o.stop_reason is not None
            self.save = k % o.cfg.checkpoint_every == 0 or self.final
            control.should_save = control.should_save or self.save
            control.should_log = True
            self.pending = k
            o.steps_done = k
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> Any:
            if self.pending is None or logs is None or "loss" not in logs or state.global_step != self.pending:
                return control  # e.g. the train-summary log at the very end
            k, self.pending = self.pending, None
            self.o.after_step(k, logs, self.t_iter, final=self.final, save=self.save)
            return control

    return EvotuneGRPOTrainer, RunCallback


@dataclass
class _Loop:
    """State shared by the reward function and the callback during `trainer.train()`."""

    cfg: TrainConfig
    run: RunDir
    logger: Any
    model: Any
    tok: Any
    task: Any
    budget: Budget
    stats: StepStats
    bar: Any = None
    stop_reason: str | None = None
    steps_done: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)

    def after_step(self, k: int, logs: dict[str, Any], t_iter: float, final: bool, save: bool) -> None:
        s, b = self.stats, self.budget
        r = s.rewards or [0.0]
        mean = statistics.fmean(r)
        hook = getattr(self.task, "iteration_hook", None)  # task-held run state (safety: λ); see ES trainer
        task_state = hook.end(k) if hook is not None else {}
        row: dict[str, Any] = {
            "step": k,
            **task_state,
            "train/reward_mean": mean,
            "train/reward_std": statistics.pstdev(r),
            "train/reward_min": min(r),
            "train/reward_max": max(r),
            "train/accuracy": statistics.fmean(1.0 if c else 0.0 for c in s.correct) if s.correct else 0.0,
            "train/sample": s.sample[:300],
            "time/generate": s.t_generate,
            "time/score": s.t_score,
            "time/update": max(0.0, t_iter - s.t_generate - s.t_score),
            "time/iteration": t_iter,
            **b.as_metrics(),
        }
        for key, v in logs.items():
            if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                row[_TRL_NAMES.get(key, f"grpo/{key}")] = v
        s.reset()
        self.logger.log(row, k)
        if (self.cfg.eval.every and k % self.cfg.eval.every == 0) or final:
            self.last_eval = self.evaluate(k)
        if hook is not None:
            hook.begin(k + 1)  # after the eval, whose scores must not count towards step k + 1
        if save:
            self.run.save_checkpoint(
                k, self.model, self.tok,
                {"method": "grpo", "budget": vars(b).copy(), "trl_checkpoint": f"trl/{_TRL_CKPT_PREFIX}{k}"},
                keep_last=self.cfg.keep_checkpoints,
            )
        if self.bar is not None:
            ev = self.last_eval.get("reward_mean", float("nan"))
            self.bar.set_postfix({"reward": f"{mean:.3f}", "eval": f"{ev:.3f}"}, refresh=False)
            self.bar.update(1)

    def evaluate(self, k: int) -> dict[str, Any]:
        """Greedy held-out eval in eval mode (no dropout), then back to training mode."""
        was_training = self.model.training
        self.model.train(False)
        try:
            return heldout_eval(self.cfg, self.run, self.logger, self.model, self.tok, self.task, k, self.budget.as_metrics())
        finally:
            self.model.train(was_training)


def grpo_args(cfg: TrainConfig, run: RunDir, max_new_tokens: int) -> Any:
    """TRL's GRPOConfig for this run; TRL's own objections become ConfigErrors."""
    from trl import GRPOConfig

    g = cfg.grpo
    batch, ga = completions_per_step(cfg), accumulation_steps(cfg)
    try:
        return GRPOConfig(
            output_dir=str(run.path / "trl"),
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,  # TRL's default trades ~20% speed for memory a CPU run does not need
            seed=cfg.seed,
            data_seed=cfg.seed,
            max_steps=g.steps,
            per_device_train_batch_size=batch // ga,
            gradient_accumulation_steps=ga,
            num_generations=g.num_generations,
            learning_rate=g.learning_rate,
            lr_scheduler_type=g.lr_scheduler,
            warmup_steps=g.warmup_steps,
            max_grad_norm=g.max_grad_norm,
            beta=g.beta,
            loss_type=g.loss_type,
            scale_rewards=g.scale_rewards,
            temperature=g.temperature,
            top_p=1.0,
            top_k=0,
            max_completion_length=max_new_tokens,
            shuffle_dataset=False,  # the dataset is already in step order (see module docstring)
            remove_unused_columns=False,
            disable_dropout=True,
            dataloader_num_workers=0,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="steps",
            save_steps=cfg.checkpoint_every,
            save_total_limit=1,  # only the newest TRL checkpoint is needed to resume
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
    except ValueError as exc:
        raise ConfigError(f"TRL rejected the GRPO settings: {exc}") from exc


@dataclass
class GRPORunner:
    """Owns one GRPO run: directory, model, TRL trainer, evaluation cadence, checkpoints, resume."""

    cfg: TrainConfig
    resume: bool = False
    progress: bool = True

    def train(self) -> dict[str, Any]:
        validate_grpo(self.cfg)
        task = self.cfg.task.build()
        validate_task_fit(self.cfg, task)
        cfg, run = open_run(self.cfg, self.resume)
        self.cfg, self.run = cfg, run
        set_threads(cfg.threads)
        from evotune.backends.hf import stop_ids
        from evotune.backends.models import load_model
        from evotune.runs.logger import MetricsLogger

        model, tok = load_model(cfg.model.name, cfg.model.dtype)
        self.model, self.tok = model, tok
        if cfg.model.dtype != "float32":
            warnings.warn(f"GRPO updates the {cfg.model.dtype} weights in place (no fp32 master copy)", stacklevel=2)
        mnt = cfg.generation.max_new_tokens or task.default_max_new_tokens
        data = build_step_data(cfg, task, tok)
        stops = stop_ids(model, tok)  # before TRL touches the generation config

        ckpts = trl_checkpoints(run)
        start, resume_from = ckpts[-1] if ckpts else (0, None)
        _drop_after(run, start)
        budget = _budget_at(run, start) if start else Budget()
        logger = MetricsLogger(run, start_step=start + 1)
        stats = StepStats()
        loop = _Loop(cfg, run, logger, model, tok, task, budget, stats, steps_done=start)
        try:
            if start == 0 and not (run.evals / "iter_000000.jsonl").exists():
                loop.evaluate(0)
            hook = getattr(task, "iteration_hook", None)
            if hook is not None:  # the committed steps' task state is in their metrics rows
                hook.restore([r for r in read_jsonl(run.metrics) if "train/reward_mean" in r and r["step"] <= start])
                hook.begin(start + 1)
            loop.stop_reason = budget.spent(cfg)
            if loop.stop_reason is None and start < cfg.grpo.steps:
                self._run_trl(cfg, run, loop, data, mnt, stops, resume_from, start)
        finally:
            logger.close()
            if loop.bar is not None:
                loop.bar.close()
        summary = {
            "method": "grpo",
            "steps": loop.steps_done,
            "stop_reason": loop.stop_reason or "steps done",
            **budget.as_metrics(),
        }
        if not loop.last_eval:  # nothing left to train (resumed after the end): report the last eval on file
            evals = [r for r in read_jsonl(run.metrics) if "eval/reward_mean" in r]
            loop.last_eval = {k[5:]: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("eval/")}
        summary.update({f"eval/{n}": v for n, v in loop.last_eval.items()})
        atomic_write_json(run.path / "summary.json", summary)
        return summary

    def _run_trl(
        self, cfg: TrainConfig, run: RunDir, loop: _Loop, data: StepData, mnt: int, stops: set[int],
        resume_from: Path | None, start: int,
    ) -> None:
        import datasets
        from transformers import PrinterCallback, ProgressCallback, set_seed

        trainer_cls, callback_cls = _trl_classes()
        ds = datasets.Dataset.from_dict({"prompt": data.prompts, "example_index": data.example_index, "step": data.step})
        reward = make_reward_fn(loop.task, loop.tok, stops, mnt, data, loop.stats)
        args = grpo_args(cfg, run, mnt)
        loop.model.requires_grad_(True)  # load_model freezes weights for inference
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(experimental|deprecated).*")
            trainer = trainer_cls(
                model=loop.model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=loop.tok,
                callbacks=[callback_cls(loop)],
            )
        trainer.evotune_stats = loop.stats
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        if self.progress:
            from tqdm.auto import tqdm

            loop.bar = tqdm(total=cfg.grpo.steps, initial=start, desc="GRPO", unit="step", dynamic_ncols=True)
        self.trainer = trainer
        set_seed(cfg.seed)  # sampling RNG is a function of the seed only (a resume restores TRL's saved RNG)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        loop.model.train(False)
        loop.model.requires_grad_(False)
