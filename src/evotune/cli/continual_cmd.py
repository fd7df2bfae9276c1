"""`evotune continual`: train tasks in sequence and report the accuracy matrix and forgetting."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from evotune.cli.app import app
from evotune.cli.common import console, friendly, parse_sets, split_csv
from evotune.cli.options import FieldDefault

Opt = typer.Option


def _spec(name: str) -> FieldDefault:
    return FieldDefault("evotune.continual.spec:ContinualSpec", name)  # the default is written once, there


def parse_task_opts(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`--task-opt math:difficulty=2` pairs → {task: {option: value}} (values parsed as YAML scalars)."""
    from evotune.errors import ConfigError

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        task, sep, rest = item.partition(":")
        if not sep or not task.strip() or "=" not in rest:
            raise ConfigError(f"--task-opt {item!r}: use TASK:KEY=VALUE, e.g. math:data=gsm8k.jsonl")
        for key, val in parse_sets([rest]).items():
            out.setdefault(task.strip(), {})[key] = val
    return out


@app.command("continual")
@friendly
def continual(
    tasks: Annotated[str, Opt(help="comma-separated task sequence, e.g. countdown,math,chemistry,boolq")],
    budget_per_task: Annotated[str, Opt("--budget-per-task", help="each stage's budget: completions=N and/or tokens=N")],
    run_dir: Annotated[str, Opt("--run-dir", help="directory of the continual run (rerun to continue it)")],
    method: Annotated[str, Opt(help="es | grpo", default_factory=_spec("method"))],
    model: Annotated[str, Opt(help="base model: smollm2-135m, a model directory or a run",
                              default_factory=_spec("model"))],
    eval_limit: Annotated[int | None, Opt(min=1, help="held-out items per task for the matrix",
                                          default_factory=_spec("eval_limit"))],
    max_new_tokens: Annotated[int | None, Opt(min=1, help="for training and evaluation (default: each task's own)",
                                              default_factory=_spec("max_new_tokens"))],
    seed: Annotated[int, Opt(help="seed of the tasks' splits and of every stage", default_factory=_spec("seed"))],
    kl_prompts: Annotated[int, Opt(min=0, help="held-out prompts per task for KL to the base (0 = skip)",
                                   default_factory=_spec("kl_prompts"))],
    task_opt: Annotated[list[str] | None, Opt("--task-opt", help="TASK:KEY=VALUE, e.g. math:difficulty=2")] = None,
    sets: Annotated[list[str] | None, Opt("--set", help="trainer settings for every stage, e.g. es.population=8")] = None,
    threads: Annotated[int | None, Opt(min=1)] = None,
    no_progress: Annotated[bool, Opt("--no-progress")] = False,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda | cuda:N (training and evaluation)")] = None,
) -> None:
    """Train the tasks one after another; matrix, BWT, forgetting and KL → continual.json and a PNG."""
    from evotune.continual.report import tables
    from evotune.continual.runner import PLOT_FILE, RESULT_FILE, run_continual
    from evotune.continual.spec import ContinualSpec

    spec = ContinualSpec(
        tasks=split_csv(tasks) or [], method=method, run_dir=run_dir, budget=budget_per_task, model=model,
        seed=seed, eval_limit=eval_limit, max_new_tokens=max_new_tokens, kl_prompts=kl_prompts,
        overrides={**parse_sets(sets), **({"model.device": device} if device else {})}, task_options=parse_task_opts(task_opt), threads=threads, progress=not no_progress,
    )

    def announce(i: int, name: str) -> None:
        console.print(f"[bold]stage {i}/{len(spec.tasks)}: {name}[/]")

    result = run_continual(spec, on_stage=announce)
    for t in tables(result):
        console.print(t)
    console.print(f"wrote {run_dir}/{RESULT_FILE} and {run_dir}/{PLOT_FILE}")
