"""`evotune train es|grpo|randopt`: one command per method, sharing every run flag (`app.shared_train_options`).

Each method's own flags are a table (flag, type, option, config key), so a flag two methods share
(the ES noise of `es` and `randopt`) is declared once and always lands on the same config field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from evotune.cli.app import TrainArgs, print_summary, shared_train_options, train_app
from evotune.cli.common import console, friendly, split_csv
from evotune.cli.options import add_options

Opt = typer.Option
ResumeOpt = Annotated[bool, Opt(help="continue the run in --run-dir where it stopped")]

# flag, type, typer option, config key. A flag not given (None) leaves the config's own value.
MethodFlag = tuple[str, Any, Any, str]
NOISE_FLAGS: list[MethodFlag] = [
    ("noise", str, Opt(help="full | lowrank"), "es.noise"),
    ("rank", int, Opt(help="rank of low-rank noise"), "es.rank"),
]
ES_FLAGS: list[MethodFlag] = [
    ("population", int, Opt(help="members per iteration (N)"), "es.population"),
    ("sigma", float, Opt(help="noise scale σ"), "es.sigma"),
    ("alpha", float, Opt(help="step size α"), "es.alpha"),
    ("iterations", int, Opt(help="number of ES iterations"), "es.iterations"),
    ("shaping", str, Opt(help="zscore | centered_rank"), "es.shaping"),
    ("antithetic", bool, Opt(help="mirrored noise pairs"), "es.antithetic"),
    *NOISE_FLAGS,
    ("include", str, Opt(help="comma-separated globs of parameters to evolve"), "es.include"),
    ("exclude", str, Opt(help="comma-separated globs of parameters to freeze"), "es.exclude"),
    ("prompts_per_iteration", int, Opt(help="mini-batch of train prompts per iteration"), "es.prompts_per_iteration"),
    ("workers", int, Opt(help="evaluate members on N local Ray workers (ray.workers)"), "ray.workers"),
    ("ray_address", str, Opt(help="join an existing Ray cluster (ray.address)"), "ray.address"),
    ("ray_check_every", int, Opt(help="compare replica checksums every K iterations"), "ray.check_every"),
    ("gpus_per_worker", float, Opt(help="GPUs per Ray worker; fractions share a GPU"), "ray.gpus_per_worker"),
    ("master_device", str, Opt(help="device (beside the model) | cpu (fp32 master on the host)"), "es.master_device"),
]
RANDOPT_FLAGS: list[MethodFlag] = [
    ("population", int, Opt(help="perturbations sampled (N)"), "es.population"),
    ("sigma", float, Opt(help="noise scale σ of the perturbations"), "es.sigma"),
    ("top_k", int, Opt(help="members kept (K); the held-out majority vote is over them"), "randopt.top_k"),
    ("prompts", int, Opt(help="train prompts every member is scored on"), "es.prompts_per_iteration"),
    ("members_per_step", int, Opt(help="members scored per step (unit of progress and resume)"),
     "randopt.members_per_step"),
    *NOISE_FLAGS,
]
GRPO_FLAGS: list[MethodFlag] = [
    ("beta", float, Opt(help="KL weight β to the reference (base) model; 0 = no reference"), "grpo.beta"),
    ("num_generations", int, Opt(help="completions per prompt (group size K)"), "grpo.num_generations"),
    ("prompts_per_step", int, Opt(help="distinct train prompts per optimizer step"), "grpo.prompts_per_step"),
    ("lr", float, Opt("--lr", help="AdamW learning rate"), "grpo.learning_rate"),
    ("lr_scheduler", str, Opt(help="constant | linear | cosine | ... (transformers schedule)"), "grpo.lr_scheduler"),
    ("warmup_steps", int, Opt(help="learning-rate warmup steps"), "grpo.warmup_steps"),
    ("temperature", float, Opt(help="sampling temperature of the training completions"), "grpo.temperature"),
    ("max_prompt_length", int, Opt(help="longest allowed train prompt in tokens (never truncated)"),
     "grpo.max_prompt_length"),
    ("loss_type", str, Opt(help="grpo | dr_grpo | dapo | bnpo | cispo | sapo"), "grpo.loss_type"),
    ("scale_rewards", str, Opt(help="group | batch | none (advantage scaling)"), "grpo.scale_rewards"),
    ("steps", int, Opt(help="number of optimizer steps"), "grpo.steps"),
    ("grad_accum", int, Opt("--grad-accum", help="micro-batches per step"), "grpo.gradient_accumulation_steps"),
    ("sampler", str, Opt(help="policy | es: who writes the completions (es: ES-perturbed members, "
                              "es.sigma; GRPO's update is unchanged)"), "grpo.sampler"),
]


def method_options(method: str, table: Sequence[MethodFlag]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add a method's flags; the command receives them as `flags`, keyed by config field (method included)."""
    return add_options([(name, tp | None, opt, None) for name, tp, opt, _ in table], "flags",
                       lambda v: {"method": method, **{key: v[name] for name, _, _, key in table}})


@train_app.command("es")
@friendly
@shared_train_options
@method_options("es", ES_FLAGS)
def train_es(
    resume: ResumeOpt = False,
    estimate: Annotated[bool, Opt(help="time one member, one update, one eval and one checkpoint here, print what "
                                  "the run will cost, and exit without training")] = False,
    *,
    flags: dict[str, Any],
    args: TrainArgs,
) -> None:
    """Full-parameter Evolution Strategies on a task's verifiable reward."""
    flags["es.include"], flags["es.exclude"] = split_csv(flags["es.include"]), split_csv(flags["es.exclude"])
    run(args.build(resume, flags), resume, args.progress, estimate)


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
@method_options("randopt", RANDOPT_FLAGS)
def train_randopt(
    resume: ResumeOpt = False,
    estimate: Annotated[bool, Opt(help="measure what the run will cost and exit without training")] = False,
    *,
    flags: dict[str, Any],
    args: TrainArgs,
) -> None:
    """RandOpt: score N random perturbations of the base, keep the top K (no update); the best is the checkpoint."""
    run(args.build(resume, flags), resume, args.progress, estimate)


@train_app.command("grpo")
@friendly
@shared_train_options
@method_options("grpo", GRPO_FLAGS)
def train_grpo(
    resume: Annotated[bool, Opt(help="continue the run in --run-dir from its last TRL checkpoint")] = False,
    *,
    flags: dict[str, Any],
    args: TrainArgs,
) -> None:
    """GRPO (TRL) on a task's verifiable reward, on the same prompts, budget and eval as ES."""
    run(args.build(resume, flags), resume, args.progress, False)
