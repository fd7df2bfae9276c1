"""The GRPO trainer: TRL's `GRPOTrainer` inside evotune's trainer frame, comparable with ES runs.

TRL owns the optimisation loop; a callback hands each finished step to the frame's `after_step`,
so budget, metric names, held-out evals, checkpoints and the summary are the ES trainer's own code.
What is GRPO's alone: `RUN/trl/checkpoint-K` (optimizer, scheduler and RNG state, what `--resume`
continues from) and the `grpo/*` metrics. See `evotune.grpo.trl` for the TRL pieces.

`grpo.sampler: es` keeps GRPO's update and changes only who writes the completions: `ESSampler`
(TRL's `rollout_func`) — the seed papers' open question "sample with ES, optimise with gradients".
"""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Any

from evotune.backends.hf import generate, stop_ids
from evotune.backends.models import load_model, resolve_device, resolve_dtype
from evotune.config import TrainConfig
from evotune.es.params import EvolvingParams, select_params
from evotune.es.strategy import ask
from evotune.grpo import trl as glue
from evotune.runs.metrics import Budget, StepStats
from evotune.tasks import build_task
from evotune.trainers.frame import Trainer


class ESSampler:
    """TRL `rollout_func`: completion j of every group is the greedy answer of ES member θ + σ·ε_j.

    The members are ES's own population for that iteration (`ask(seed, step, K)`, es.sigma,
    es.antithetic, es.include/exclude), drawn around the current weights through the one perturbation
    path (`EvolvingParams`) and restored exactly afterwards, so the gradient step sees θ bit for bit.
    No sampling log-probabilities are returned: TRL then treats the completions as its own (ratio 1),
    i.e. the plain policy-gradient step on θ that GRPO takes, only on ES's samples.
    """

    def __init__(self, cfg: TrainConfig, model: Any, tok: Any, max_new_tokens: int) -> None:
        self.cfg, self.model, self.tok, self.max_new_tokens = cfg, model, tok, max_new_tokens
        self.named = select_params(model, cfg.es.include, cfg.es.exclude)

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, Any]:
        k = self.cfg.grpo.num_generations
        groups = [prompts[i:i + k] for i in range(0, len(prompts), k)]
        if len(prompts) % k or any(len(set(g)) != 1 for g in groups):
            raise RuntimeError(f"TRL passed {len(prompts)} prompts not in groups of {k} equal ones")
        unique = [g[0] for g in groups]
        members = ask(self.cfg.seed, trainer.state.global_step + 1, k, self.cfg.es.antithetic)
        params = EvolvingParams(self.named)  # master = θ now; restore() puts it back bit for bit
        completion_ids: list[list[int]] = [[] for _ in prompts]
        try:
            for j, m in enumerate(members):
                params.perturb(m.seed, m.sign, self.cfg.es.sigma)
                comps = generate(self.model, self.tok, unique, self.max_new_tokens,
                                 batch_size=self.cfg.generation.batch_size)
                for g, c in enumerate(comps):
                    completion_ids[g * k + j] = list(c.token_ids)
        finally:
            params.restore()
        prompt_ids = trainer._tokenize_prompts(prompts)[0]  # the trainer's one rule: as ES tokenises
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


class GRPOTrainer(Trainer):
    """Owns one GRPO run: directory, model, TRL trainer, evaluation cadence, checkpoints, resume."""

    method = "grpo"
    length = "grpo.steps"
    unit = "step"
    own_dirs = (glue.TRL_DIR,)  # TRL's checkpoints: what --resume continues from
    rewind_loads_weights = False  # TRL loads its checkpoint inside its own train()

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        glue.validate_grpo(cfg)  # before any model is loaded or directory written
        super().__init__(cfg, resume, progress)
        self.task = build_task(cfg.task)
        glue.validate_task_fit(cfg, self.task)
        self.rewards = glue.RewardLog()

    def setup(self) -> None:
        cfg = self.cfg
        # fp32 weights for the optimizer, the configured dtype (auto: bf16 on CUDA) through autocast
        load_dtype, self.autocast = glue.grpo_precision(resolve_dtype(cfg.model.dtype, resolve_device(cfg.model.device)))
        self.model, self.tok = load_model(cfg.model.name, load_dtype, cfg.model.device)
        self.max_new_tokens = self.task.max_new_tokens(cfg.generation.max_new_tokens)
        self.data = glue.build_step_data(cfg, self.task, self.tok)
        self.stops = stop_ids(self.model, self.tok)  # before TRL touches the generation config

    def rewind(self) -> int:
        """The newest complete TRL checkpoint's step, with everything after it dropped (TRL loads its weights)."""
        ckpts = glue.trl_checkpoints(self.run)
        start, self.resume_from = ckpts[-1] if ckpts else (0, None)
        glue.drop_after(self.run, start)
        self.budget = glue.budget_at(self.run, start) if start else Budget()
        return start

    def step_stats(self, seconds: float) -> StepStats:
        """The shared per-step numbers from what the reward function saw; resets it for the next step."""
        s = self.rewards
        stats = StepStats(
            rewards=list(s.rewards),
            accuracy=statistics.fmean(1.0 if c else 0.0 for c in s.correct) if s.correct else 0.0,
            sample=s.sample,
            completions=len(s.rewards),
            completion_tokens=s.completion_tokens,
            prompt_tokens=s.prompt_tokens,
            times={"generate": s.t_generate, "score": s.t_score,
                   "update": max(0.0, seconds - s.t_generate - s.t_score), "iteration": seconds},
        )
        s.reset()
        return stats

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return {"trl_checkpoint": f"{glue.TRL_DIR}/{glue.TRL_CKPT_PREFIX}{self.steps_done}"}, None

    def run_loop(self, start: int) -> None:
        if self.stop_reason is not None or start >= self.total_steps:
            return
        import datasets
        from transformers import PrinterCallback, ProgressCallback, set_seed

        trainer_cls, callback_cls = glue.trl_classes()
        d = self.data
        ds = datasets.Dataset.from_dict({"prompt": d.prompts, "example_index": d.example_index, "step": d.step})
        reward = glue.make_reward_fn(self.task, self.tok, self.stops, self.max_new_tokens, d, self.rewards)
        args = glue.grpo_args(self.cfg, self.run, self.max_new_tokens, next(self.model.parameters()).device.type,
                              self.autocast)
        self.model.requires_grad_(True)  # load_model freezes weights for inference
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(experimental|deprecated).*")
            trainer = trainer_cls(
                model=self.model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=self.tok,
                callbacks=[callback_cls(self)],
                rollout_func=ESSampler(self.cfg, self.model, self.tok, self.max_new_tokens)
                if self.cfg.grpo.sampler == "es" else None,
            )
        trainer.evotune_stats = self.rewards
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        self.trainer = trainer
        set_seed(self.cfg.seed)  # sampling RNG is a function of the seed only (a resume restores TRL's saved RNG)
        resume_from: Path | None = self.resume_from
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        self.model.train(False)
        self.model.requires_grad_(False)
