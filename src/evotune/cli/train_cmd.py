"""`evotune train es|grpo|randopt`: one command per method, sharing every run flag (`app.shared_train_options`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from evotune.cli.app import TrainArgs, print_summary, shared_train_options, train_app
from evotune.cli.common import console, friendly, split_csv

Opt = typer.Option


@train_app.command("es")
@friendly
@shared_train_options
def train_es(
    resume: Annotated[bool, Opt(help="continue the run in --run-dir where it stopped")] = False,
    population: Annotated[int | None, Opt(help="members per iteration (N)")] = None,
    sigma: Annotated[float | None, Opt(help="noise scale σ")] = None,
    alpha: Annotated[float | None, Opt(help="step size α")] = None,
    iterations: Annotated[int | None, Opt(help="number of ES iterations")] = None,
    shaping: Annotated[str | None, Opt(help="zscore | centered_rank")] = None,
    antithetic: Annotated[bool | None, Opt(help="mirrored noise pairs")] = None,
    noise: Annotated[str | None, Opt(help="full | lowrank")] = None,
    rank: Annotated[int | None, Opt(help="rank of low-rank noise")] = None,
    include: Annotated[str | None, Opt(help="comma-separated globs of parameters to evolve")] = None,
    exclude: Annotated[str | None, Opt(help="comma-separated globs of parameters to freeze")] = None,
    prompts_per_iteration: Annotated[int | None, Opt(help="mini-batch of train prompts per iteration")] = None,
    workers: Annotated[int | None, Opt(help="evaluate members on N local Ray workers (ray.workers)")] = None,
    ray_address: Annotated[str | None, Opt(help="join an existing Ray cluster (ray.address)")] = None,
    ray_check_every: Annotated[int | None, Opt(help="compare replica checksums every K iterations")] = None,
    gpus_per_worker: Annotated[float | None, Opt(help="GPUs per Ray worker; fractions share a GPU")] = None,
    master_device: Annotated[str | None, Opt(help="device (beside the model) | cpu (fp32 master on the host)")] = None,
    estimate: Annotated[bool, Opt(help="time one member, one update, one eval and one checkpoint here, print what "
                                  "the run will cost, and exit without training")] = False,
    *,
    args: TrainArgs,
) -> None:
    """Full-parameter Evolution Strategies on a task's verifiable reward."""
    cfg = args.build(resume, {
        "method": "es", "es.population": population, "es.sigma": sigma, "es.alpha": alpha,
        "es.iterations": iterations, "es.shaping": shaping, "es.antithetic": antithetic, "es.noise": noise,
        "es.rank": rank, "es.include": split_csv(include), "es.exclude": split_csv(exclude),
        "es.prompts_per_iteration": prompts_per_iteration,
        "ray.workers": workers, "ray.address": ray_address, "ray.check_every": ray_check_every,
        "ray.gpus_per_worker": gpus_per_worker, "es.master_device": master_device,
    })
    run(cfg, resume, args.progress, estimate)


def run(cfg: Any, resume: bool, progress: bool, estimate: bool) -> None:
    """Train `cfg`, or with `estimate` only measure what training it would cost."""
    if estimate:
        import json

        from evotune.trainers.estimate import estimate as measure
        from evotune.trainers.estimate import report

        e = measure(cfg)
        console.print(report(e), highlight=False, soft_wrap=True)
        print(json.dumps(e.as_dict()))  # the numbers, machine-readable, on stdout
        return
    from evotune.trainers import make_trainer  # torch and transformers: loaded when a command runs

    print_summary(make_trainer(cfg, resume=resume, progress=progress).train())


@train_app.command("randopt")
@friendly
@shared_train_options
def train_randopt(
    resume: Annotated[bool, Opt(help="continue the run in --run-dir where it stopped")] = False,
    population: Annotated[int | None, Opt(help="perturbations sampled (N)")] = None,
    sigma: Annotated[float | None, Opt(help="noise scale σ of the perturbations")] = None,
    top_k: Annotated[int | None, Opt(help="members kept (K); the held-out majority vote is over them")] = None,
    prompts: Annotated[int | None, Opt(help="train prompts every member is scored on")] = None,
    members_per_step: Annotated[int | None, Opt(help="members scored per step (unit of progress and resume)")] = None,
    noise: Annotated[str | None, Opt(help="full | lowrank")] = None,
    rank: Annotated[int | None, Opt(help="rank of low-rank noise")] = None,
    estimate: Annotated[bool, Opt(help="measure what the run will cost and exit without training")] = False,
    *,
    args: TrainArgs,
) -> None:
    """RandOpt: score N random perturbations of the base, keep the top K (no update); the best is the checkpoint."""
    cfg = args.build(resume, {
        "method": "randopt", "es.population": population, "es.sigma": sigma, "randopt.top_k": top_k,
        "es.prompts_per_iteration": prompts, "randopt.members_per_step": members_per_step, "es.noise": noise,
        "es.rank": rank,
    })
    run(cfg, resume, args.progress, estimate)


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
    sampler: Annotated[str | None, Opt(help="policy | es: who writes the completions (es: ES-perturbed members, "
                                       "es.sigma; GRPO's update is unchanged)")] = None,
    *,
    args: TrainArgs,
) -> None:
    """GRPO (TRL) on a task's verifiable reward, on the same prompts, budget and eval as ES."""
    cfg = args.build(resume, {
        "method": "grpo", "grpo.beta": beta, "grpo.num_generations": num_generations,
        "grpo.prompts_per_step": prompts_per_step, "grpo.learning_rate": lr, "grpo.lr_scheduler": lr_scheduler,
        "grpo.warmup_steps": warmup_steps, "grpo.temperature": temperature,
        "grpo.max_prompt_length": max_prompt_length, "grpo.loss_type": loss_type,
        "grpo.scale_rewards": scale_rewards, "grpo.steps": steps, "grpo.gradient_accumulation_steps": grad_accum,
        "grpo.sampler": sampler,
    })
    run(cfg, resume, args.progress, False)
