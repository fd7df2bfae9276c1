"""`evotune sweep es|grpo`: a hyper-parameter grid × seeds, resumable, with per-cell heat-maps.

Both commands share the flags of the base run (one table, `BASE_FLAGS`); each adds its two axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.cli.app import sweep_app
from evotune.cli.common import assemble, console, friendly, parse_sets
from evotune.cli.options import REQUIRED, Flag, add_options

Opt = typer.Option


@dataclass(frozen=True)
class SweepArgs:
    """The flags every sweep shares, parsed: where it goes, its seeds and what its base run overrides."""

    out: Path
    seeds: str = "0"
    config: Path | None = None
    task: str | None = None
    model: str | None = None
    budget: str | None = None
    max_new_tokens: int | None = None
    eval_limit: int | None = None
    sets: list[str] | None = None
    kl: bool = False
    no_progress: bool = False
    device: str | None = None


_D = SweepArgs  # every default below is SweepArgs' own
BASE_FLAGS: list[Flag] = [
    ("out", Path, Opt("--out", help="sweep directory (cells/seedK run directories inside)"), REQUIRED),
    ("seeds", str, Opt(help="comma-separated seeds"), _D.seeds),
    ("config", Path | None, Opt("--config", "-c"), _D.config),
    ("task", str | None, Opt(), _D.task),
    ("model", str | None, Opt(), _D.model),
    ("budget", str | None, Opt(help="completions=N or tokens=N per run"), _D.budget),
    ("max_new_tokens", int | None, Opt(), _D.max_new_tokens),
    ("eval_limit", int | None, Opt(), _D.eval_limit),
    ("sets", list[str] | None, Opt("--set"), _D.sets),
    ("kl", bool, Opt(help="also measure on-task KL to the base per run"), _D.kl),
    ("no_progress", bool, Opt("--no-progress"), _D.no_progress),
    ("device", str | None, Opt(help="auto | cpu | cuda | cuda:N"), _D.device),
]
base_options = add_options(BASE_FLAGS, "args", lambda v: SweepArgs(**v))


def _floats(text: str | None, flag: str) -> list[float] | None:
    """An axis's values; None when the flag is not given (an empty one is refused: it would drop the axis)."""
    from evotune.analysis.common import parse_floats

    return None if text is None else parse_floats(text, flag)


def _base_config(method: str, a: SweepArgs) -> Any:
    """The base run every cell varies: YAML < --set < the named flags, as in `train`."""
    from evotune.config import BudgetConfig

    o: dict[str, Any] = {"method": method, "task.name": a.task, "model.name": a.model, "run_dir": str(a.out / "_base"),
                         "generation.max_new_tokens": a.max_new_tokens, "eval.limit": a.eval_limit,
                         "model.device": a.device}
    if a.budget:
        b = BudgetConfig.parse(a.budget)
        o["budget.completions"], o["budget.tokens"] = b.completions, b.tokens
    o = {**parse_sets(a.sets), **{k: v for k, v in o.items() if v is not None}}  # flag > --set > YAML, as in train
    return assemble(a.config, None, False, o)


def _run(method: str, axes: dict[str, list[Any] | None], a: SweepArgs) -> None:
    from evotune.errors import ConfigError
    from evotune.sweep import sweep

    base = _base_config(method, a)
    grid = {k: v for k, v in axes.items() if v}
    if not grid:
        raise ConfigError("give at least one grid axis")
    try:
        seed_list = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        seed_list = []
    if not seed_list:
        raise ConfigError(f"--seeds {a.seeds[:80]!r}: give one or more whole numbers, e.g. 0,1,2")
    res = sweep(base, grid, seed_list, a.out, progress=not a.no_progress, kl=a.kl)
    t = Table(title=f"sweep {method}: held-out reward per cell (mean ± std over {len(seed_list)} seeds)")
    for col in [*grid, "reward", "accuracy", "hacking", *(["kl"] if a.kl else [])]:
        t.add_column(col.split(".")[-1])
    for c in res["cells"]:
        vals = [f"{c.get(f'{m}_mean', float('nan')):.3g} ± {c.get(f'{m}_std', 0):.2g}"
                for m in ["reward", "accuracy", "hacking", *(["kl"] if a.kl else [])]]
        t.add_row(*[str(c[k]) for k in grid], *vals)
    console.print(t)
    console.print(f"wrote {a.out / 'sweep.json'} and heat-maps")


@sweep_app.command("es")
@friendly
@base_options
def sweep_es(
    alpha: Annotated[str | None, Opt(help="comma-separated α values")] = None,
    sigma: Annotated[str | None, Opt(help="comma-separated σ values")] = None,
    *,
    args: SweepArgs,
) -> None:
    """ES grid over α × σ (and seeds)."""
    _run("es", {"es.alpha": _floats(alpha, "--alpha"), "es.sigma": _floats(sigma, "--sigma")}, args)


@sweep_app.command("grpo")
@friendly
@base_options
def sweep_grpo(
    beta: Annotated[str | None, Opt(help="comma-separated KL weights β")] = None,
    lr: Annotated[str | None, Opt(help="comma-separated learning rates")] = None,
    *,
    args: SweepArgs,
) -> None:
    """GRPO grid over β × learning rate (and seeds)."""
    _run("grpo", {"grpo.beta": _floats(beta, "--beta"), "grpo.learning_rate": _floats(lr, "--lr")}, args)
