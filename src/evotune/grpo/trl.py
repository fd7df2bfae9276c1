"""GRPO through TRL: TRL's trainer with evotune's rules, the callback into the trainer frame, and its settings.

`evotune.trainers.grpo.GRPOTrainer` drives the GRPO pieces inside the shared trainer frame; each
lives in a module named for its job and is re-exported here, the one import the trainer uses:

    validate   settings TRL would reject, checked before any model loads   (`grpo.validate`)
    data       step k trains on `task.batch("train", prompts_per_step, seed, k)`, ES's mini-batch
               rule for iteration k; the chat template is applied by the task   (`grpo.data`)
    reward     each completion's token ids go through `decode_completion` and `task.score`, as ES's do;
               what the step saw becomes its shared `train/*` row   (`grpo.reward`)
    resume     `RUN/trl/checkpoint-K`, TRL's optimizer, scheduler and RNG state   (`grpo.resume`)
    TRL        the trainer subclass, the per-step callback, precision and GRPOConfig   (this module)

What is shared with ES (so a comparison measures the method, not the plumbing): prompts, reward,
evaluation (`heldout_eval`, greedy, same decode path, at step 0, every `eval.every` and at the end),
budget (completions, prompt and completion tokens, wall time; `--budget` stops the run) and the run
directory. What is GRPO's own: `RUN/trl/` and the `grpo/*` metrics (loss, kl, entropy, clip ratio,
reward std, lr, grad norm). TRL itself is imported lazily: it takes seconds.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from evotune.config import GRPO_LOSSES as SUPPORTED_LOSSES
from evotune.config import GRPO_SCHEDULERS as SUPPORTED_SCHEDULERS
from evotune.config import MAX_MICRO_BATCH, TrainConfig
from evotune.errors import ConfigError
from evotune.grpo.data import StepData, build_step_data
from evotune.grpo.resume import TRL_CKPT_PREFIX, TRL_DIR, budget_at, drop_after, trl_checkpoints, trl_dir
from evotune.grpo.reward import RewardLog, make_reward_fn
from evotune.grpo.validate import (
    accumulation_steps,
    completions_per_step,
    validate_grpo,
    validate_task_fit,
)
from evotune.runs.metrics import Budget, StepStats
from evotune.runs.rundir import RunDir

__all__ = [
    "MAX_MICRO_BATCH", "SUPPORTED_LOSSES", "SUPPORTED_SCHEDULERS", "TRL_CKPT_PREFIX", "TRL_DIR", "RewardLog", "StepData",
    "accumulation_steps", "budget_at", "build_step_data", "completions_per_step", "drop_after", "grpo_args",
    "grpo_precision", "make_reward_fn", "trl_checkpoints", "trl_classes", "trl_dir", "validate_grpo",
    "validate_task_fit",
]

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
            output_dir=str(trl_dir(run)),
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
