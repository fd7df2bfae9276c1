"""GRPO through TRL: validation, step data, the shared reward path, TRL checkpoints and callback.

`evotune.trainers.grpo.GRPOTrainer` drives these pieces inside the shared trainer frame.

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotune.backends.hf import decode_completion
from evotune.checkpoints import checkpoint_dirs, read_state
from evotune.config import TrainConfig
from evotune.errors import ConfigError
from evotune.runs.metrics import Budget, StepStats
from evotune.runs.rundir import RunDir, keep_rows, read_jsonl

# Loss types whose defaults work with token-level importance sampling (luspo/vespo need other settings).
SUPPORTED_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
# Schedules that need no extra arguments and no metric to follow.
SUPPORTED_SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt",
)
TRL_CKPT_PREFIX = "checkpoint-"
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
    if g.sampler == "es" and cfg.es.antithetic and g.num_generations % 2:
        raise ConfigError(
            f"grpo.sampler=es with es.antithetic pairs members ±ε, so grpo.num_generations must be even, got "
            f"{g.num_generations}: make it even or set es.antithetic=false"
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
class RewardLog:
    """What the reward function saw during one optimizer step; reset by the callback each step."""

    rewards: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    sample: str = ""
    t_generate: float = 0.0
    t_score: float = 0.0

    def reset(self) -> None:
        self.__dict__.update(RewardLog().__dict__)


def make_reward_fn(task: Any, tok: Any, stops: set[int], max_new_tokens: int, data: StepData, stats: RewardLog) -> Any:
    """A TRL reward callable that scores exactly as ES does: `decode_completion` then `task.score`."""

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
        num = d.name[len(TRL_CKPT_PREFIX):]
        if d.name.startswith(TRL_CKPT_PREFIX) and num.isdigit() and (d / "trainer_state.json").is_file():
            out.append((int(num), d))
    return sorted(out)


def drop_after(run: RunDir, last: int) -> None:
    """Forget everything a killed or stopped run wrote past its last resumable step."""
    root = run.path / "trl"
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith(TRL_CKPT_PREFIX) and not (d / "trainer_state.json").is_file():
                shutil.rmtree(d, ignore_errors=True)  # a save cut short
    keep_rows(run.metrics, lambda r: r.get("step", 0) <= last)
    for k, d in checkpoint_dirs(run.path):
        if k > last:
            shutil.rmtree(d, ignore_errors=True)
    if run.evals.is_dir():
        for f in run.evals.glob("iter_*.jsonl"):
            if f.stem[5:].isdigit() and int(f.stem[5:]) > last:
                f.unlink()


def budget_at(run: RunDir, step: int) -> Budget:
    """Budget spent up to `step`: from its evotune checkpoint, else from its metrics row."""
    for k, d in checkpoint_dirs(run.path):
        if k == step and "budget" in (state := read_state(d)):
            return Budget(**state["budget"])
    for r in reversed(read_jsonl(run.metrics, skip_corrupt=True)):
        if r.get("step") == step and "train/reward_mean" in r:
            return Budget(
                int(r["budget/completions"]), int(r["budget/completion_tokens"]), int(r["budget/prompt_tokens"]),
                float(r["time/wall"]),
            )
    return Budget()


# -- the TRL pieces (built lazily: importing TRL takes seconds) -------------------------------------
@functools.cache
def trl_classes() -> tuple[type, type]:
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    class EvotuneGRPOTrainer(GRPOTrainer):
        """TRL's trainer with two evotune rules: prompts tokenised as ES does, generation timed."""

        evotune_stats: RewardLog

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
        """Per step: the frame's budget and stop rule, then (once TRL has logged) its `after_step`."""

        def __init__(self, owner: Any) -> None:
            self.o = owner
            self.t0 = 0.0
            self.pending: tuple[int, StepStats] | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.t0 = time.perf_counter()
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            o, k = self.o, state.global_step
            stats = o.step_stats(time.perf_counter() - self.t0)
            after = Budget(**vars(o.budget))
            after.add(stats)
            stop = after.spent(o.cfg) is not None
            control.should_training_stop = control.should_training_stop or stop
            final = k >= state.max_steps or stop
            control.should_save = control.should_save or k % o.cfg.checkpoint_every == 0 or final
            control.should_log = True
            self.pending = (k, stats)
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> Any:
            if self.pending is None or logs is None or "loss" not in logs or state.global_step != self.pending[0]:
                return control  # e.g. the train-summary log at the very end
            (k, stats), self.pending = self.pending, None
            for key, v in logs.items():
                if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    stats.extra[_TRL_NAMES.get(key, f"grpo/{key}")] = v
            self.o.after_step(k, stats)
            return control

    return EvotuneGRPOTrainer, RunCallback


def grpo_precision(dtype: str) -> tuple[str, str | None]:
    """(dtype to load the trained weights in, autocast dtype) for a resolved `model.dtype`.

    GRPO keeps fp32 weights and runs bf16/fp16 through autocast: AdamW at lr 1e-6 moves a weight near
    0.02 by ~1e-6 per step, far below half a bf16 ulp there (~6e-5), so updates applied to bf16
    weights in place round away and GRPO silently stops learning. ES keeps its own fp32 master.
    """
    return ("float32", None) if dtype == "float32" else ("float32", dtype)


def grpo_args(
    cfg: TrainConfig, run: RunDir, max_new_tokens: int, device_type: str = "cpu", autocast: str | None = None
) -> Any:
    """TRL's GRPOConfig for this run (on the model's device type, `autocast` = bfloat16/float16 mixed
    precision over fp32 weights, see `grpo_precision`); TRL's objections become ConfigErrors."""
    from trl import GRPOConfig

    g = cfg.grpo
    batch, ga = completions_per_step(cfg), accumulation_steps(cfg)
    try:
        return GRPOConfig(
            output_dir=str(run.path / "trl"),
            use_cpu=device_type == "cpu",
            bf16=autocast == "bfloat16",  # autocast over the fp32 weights the optimizer updates
            fp16=autocast == "float16",
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
