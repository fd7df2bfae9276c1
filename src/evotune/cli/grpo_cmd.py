"""`evotune train grpo`: the GRPO baseline with the same common flags as `evotune train es`."""

from __future__ import annotations

from typing import Annotated

import typer

from evotune.cli.common import friendly
from evotune.cli.main import TrainArgs, _print_summary, shared_train_options, train_app

Opt = typer.Option


@train_app.command("grpo")
@friendly
@shared_train_options
def train_grpo(
    resume: Annotated[bool, Opt(help="continue the run in --run-dir from its last TRL checkpoint")] = False,
    beta: Annotated[float | None, Opt(help="KL weight β to the reference (base) model; 0 = no reference")] = None,
    num_generations: Annotated[int | None, Opt(help="completions per prompt (group size K)")] = None,
    prompts_per_step: Annotated[int | None, Opt(help="distinct train prompts per optimizer step")] = None,
    lr: Annotated[float | None, Opt("--lr", help="AdamW learning rate")] = None,
    lr_scheduler: Annotated[str | None, Opt(help="constant | linear | cosine | ... (transformers schedule)")] = None,
    warmup_steps: Annotated[int | None, Opt(help="learning-rate warmup steps")] = None,
    temperature: Annotated[float | None, Opt(help="sampling temperature of the training completions")] = None,
    max_prompt_length: Annotated[int | None, Opt(help="longest allowed train prompt in tokens (never truncated)")] = None,
    loss_type: Annotated[str | None, Opt(help="grpo | dr_grpo | dapo | bnpo | cispo | sapo")] = None,
    scale_rewards: Annotated[str | None, Opt(help="group | batch | none (advantage scaling)")] = None,
    steps: Annotated[int | None, Opt(help="number of optimizer steps")] = None,
    grad_accum: Annotated[int | None, Opt("--grad-accum", help="micro-batches per step")] = None,
    *,
    args: TrainArgs,
) -> None:
    """GRPO (TRL) on a task's verifiable reward, on the same prompts, budget and eval as ES."""
    from evotune.grpo.trainer import GRPORunner

    cfg = args.build(resume, {
        "method": "grpo", "grpo.beta": beta, "grpo.num_generations": num_generations,
        "grpo.prompts_per_step": prompts_per_step, "grpo.learning_rate": lr, "grpo.lr_scheduler": lr_scheduler,
        "grpo.warmup_steps": warmup_steps, "grpo.temperature": temperature,
        "grpo.max_prompt_length": max_prompt_length, "grpo.loss_type": loss_type,
        "grpo.scale_rewards": scale_rewards, "grpo.steps": steps, "grpo.gradient_accumulation_steps": grad_accum,
    })
    summary = GRPORunner(cfg, resume=resume, progress=args.progress).train()
    _print_summary(summary)
