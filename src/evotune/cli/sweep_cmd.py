"""`evotune sweep es|grpo`: a hyper-parameter grid × seeds, resumable, with per-cell heat-maps."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.cli.app import sweep_app
from evotune.cli.common import assemble, console, friendly, parse_sets

Opt = typer.Option


def _floats(text: str | None, flag: str) -> list[float] | None:
    from evotune.errors import ConfigError

    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: use comma-separated numbers") from exc


def _run(method: str, axes: dict[str, list[Any]], seeds: str, out: Path, config: Path | None, task: str | None,
         model: str | None, budget: str | None, max_new_tokens: int | None, eval_limit: int | None,
         sets: list[str] | None, kl: bool, progress: bool, device: str | None = None) -> None:
    from evotune.config import BudgetConfig
    from evotune.errors import ConfigError
    from evotune.sweep import sweep

    o: dict[str, Any] = {"method": method, "task.name": task, "model.name": model, "run_dir": str(out / "_base"),
                         "generation.max_new_tokens": max_new_tokens, "eval.limit": eval_limit,
                         "model.device": device}
    if budget:
        b = BudgetConfig.parse(budget)
        o["budget.completions"], o["budget.tokens"] = b.completions, b.tokens
    o = {**parse_sets(sets), **{k: v for k, v in o.items() if v is not None}}  # flag > --set > YAML, as in train
    base = assemble(config, None, False, o)
    axes = {k: v for k, v in axes.items() if v}
    if not axes:
        raise ConfigError("give at least one grid axis")
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    res = sweep(base, axes, seed_list, out, progress=progress, kl=kl)
    t = Table(title=f"sweep {method}: held-out reward per cell (mean ± std over {len(seed_list)} seeds)")
    for col in [*axes, "reward", "accuracy", "hacking", *(["kl"] if kl else [])]:
        t.add_column(col.split(".")[-1])
    for c in res["cells"]:
        vals = [f"{c.get(f'{m}_mean', float('nan')):.3g} ± {c.get(f'{m}_std', 0):.2g}"
                for m in ["reward", "accuracy", "hacking", *(["kl"] if kl else [])]]
        t.add_row(*[str(c[a]) for a in axes], *vals)
    console.print(t)
    console.print(f"wrote {out / 'sweep.json'} and heat-maps")


@sweep_app.command("es")
@friendly
def sweep_es(
    out: Annotated[Path, Opt("--out", help="sweep directory (cells/seedK run directories inside)")],
    alpha: Annotated[str | None, Opt(help="comma-separated α values")] = None,
    sigma: Annotated[str | None, Opt(help="comma-separated σ values")] = None,
    seeds: Annotated[str, Opt(help="comma-separated seeds")] = "0",
    config: Annotated[Path | None, Opt("--config", "-c")] = None,
    task: Annotated[str | None, Opt()] = None,
    model: Annotated[str | None, Opt()] = None,
    budget: Annotated[str | None, Opt(help="completions=N or tokens=N per run")] = None,
    max_new_tokens: Annotated[int | None, Opt()] = None,
    eval_limit: Annotated[int | None, Opt()] = None,
    sets: Annotated[list[str] | None, Opt("--set")] = None,
    kl: Annotated[bool, Opt(help="also measure on-task KL to the base per run")] = False,
    no_progress: Annotated[bool, Opt("--no-progress")] = False,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda | cuda:N")] = None,
) -> None:
    """ES grid over α × σ (and seeds)."""
    axes = {"es.alpha": _floats(alpha, "--alpha"), "es.sigma": _floats(sigma, "--sigma")}
    _run("es", axes, seeds, out, config, task, model, budget, max_new_tokens, eval_limit, sets, kl, not no_progress, device)


@sweep_app.command("grpo")
@friendly
def sweep_grpo(
    out: Annotated[Path, Opt("--out")],
    beta: Annotated[str | None, Opt(help="comma-separated KL weights β")] = None,
    lr: Annotated[str | None, Opt(help="comma-separated learning rates")] = None,
    seeds: Annotated[str, Opt()] = "0",
    config: Annotated[Path | None, Opt("--config", "-c")] = None,
    task: Annotated[str | None, Opt()] = None,
    model: Annotated[str | None, Opt()] = None,
    budget: Annotated[str | None, Opt()] = None,
    max_new_tokens: Annotated[int | None, Opt()] = None,
    eval_limit: Annotated[int | None, Opt()] = None,
    sets: Annotated[list[str] | None, Opt("--set")] = None,
    kl: Annotated[bool, Opt()] = False,
    no_progress: Annotated[bool, Opt("--no-progress")] = False,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda | cuda:N")] = None,
) -> None:
    """GRPO grid over β × learning rate (and seeds)."""
    axes = {"grpo.beta": _floats(beta, "--beta"), "grpo.learning_rate": _floats(lr, "--lr")}
    _run("grpo", axes, seeds, out, config, task, model, budget, max_new_tokens, eval_limit, sets, kl, not no_progress, device)
