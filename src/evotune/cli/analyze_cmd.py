"""`evotune analyze kl|delta|lmc|robustness` and `evotune compare`: thin wrappers over the library.

Every command accepts models the way `--model` does elsewhere (alias, model directory, run
directory → latest checkpoint); a run also brings its task and base model as defaults. Each
writes its JSON result to --out (if given) and prints a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.analysis.settings import (
    CompareConfig,
    KLSettings,
    LMCSettings,
    RobustnessSettings,
    default_of,
    help_of,
)
from evotune.cli.app import DeviceOpt, DtypeOpt, analyze_app, app
from evotune.cli.common import check_out, console, friendly, print_tables, split_csv
from evotune.report import tables

Opt = typer.Option
# Defaults come from the settings classes (torch-free), so each is written once, in evotune.analysis.settings.
_KL, _LMC, _ROB = KLSettings(), LMCSettings(), RobustnessSettings()

OutOpt = Annotated[Path | None, Opt("--out", help="write the JSON result here")]
SeedOpt = Annotated[int, Opt(help="sampling / noise seed")]
ThreadsOpt = Annotated[int | None, Opt(min=1, help="torch threads (default: torch's own)")]


def _write(out: Path | None, result: dict[str, Any]) -> None:
    from evotune.analysis.common import jsonable
    from evotune.runs.rundir import atomic_write_json

    if out is not None:
        atomic_write_json(out, jsonable(result))
        console.print(f"wrote {out}")


def _f(v: Any, digits: int = 4) -> str:
    return (
        "-"
        if v is None or (isinstance(v, float) and v != v)
        else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))
    )



def _threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(max(1, n))


def _log(msg: str) -> None:
    from rich.markup import escape

    console.print(f"[dim]{escape(msg)}[/]", highlight=False)


def _base_for(models: list[str], base: str | None) -> str:
    """--base, else the base model recorded in the first run among `models`."""
    from evotune.backends.resolve import resolve_entry
    from evotune.errors import AnalysisError

    if base:
        return base
    for m in models:
        e = resolve_entry(m)
        if e.base_model:
            return e.base_model
    raise AnalysisError("pass --base (none of the models is a run that names its base model)")


def _models(value: list[str] | None) -> list[str]:
    out = [m for v in value or [] for m in split_csv(v) or []]
    if not out:
        raise typer.BadParameter("give at least one model")
    return out


@analyze_app.command("kl")
@friendly
def kl_cmd(
    model: Annotated[list[str], Opt("--model", help="model(s) A: repeat or comma-separate")],
    base: Annotated[str | None, Opt(help="reference model B (default: the run's base model)")] = None,
    tasks: Annotated[str | None, Opt(help="comma-separated tasks (default: the runs' own tasks)")] = None,
    n_prompts: Annotated[int, Opt(min=1, help="prompts per task / general set")] = _KL.n_prompts,
    max_new_tokens: Annotated[int | None, Opt(min=1, help="default: each task's own")] = None,
    general: Annotated[bool, Opt(help="include the built-in general prompts (off-task)")] = _KL.general,
    seed: SeedOpt = _KL.seed,
    dtype: DtypeOpt = _KL.dtype,
    device: DeviceOpt = _KL.device,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Per-token KL(π_A ‖ π_B) on samples from A at T=1: k1, k2, k3 and exact, on- and off-task."""
    check_out(out, "file")
    _threads(threads)
    from evotune.analysis.kl import kl_matrix

    models = _models(model)
    settings = KLSettings(seed=seed, dtype=dtype, device=device, n_prompts=n_prompts,
                          max_new_tokens=max_new_tokens, general=general)
    if tasks is not None and not split_csv(tasks):  # "" would silently drop the runs' own task
        from evotune.errors import AnalysisError

        raise AnalysisError(f"--tasks {tasks!r}: name one or more tasks, or leave it out for the runs' own")
    res = kl_matrix(models, _base_for(models, base), split_csv(tasks), settings)
    _write(out, res)
    print_tables(tables.kl_tables(res))


@analyze_app.command("delta")
@friendly
def delta_cmd(
    models: Annotated[list[str], Opt("--models", help="models to compare: repeat or comma-separate")],
    base: Annotated[str | None, Opt(help="θ₀ (default: the run's base model)")] = None,
    plots: Annotated[Path | None, Opt(help="directory for heat-map and per-layer PNGs")] = None,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """‖Δ‖, ‖Δ‖/‖θ₀‖ per layer and module type, and pairwise cosine of Δ (streamed from safetensors)."""
    check_out(out, "file")
    _threads(threads)
    from evotune.analysis.delta import delta_stats
    from evotune.report.plots import write_delta_plots

    ms = _models(models)
    res = delta_stats(ms, _base_for(ms, base))
    _write(out, res)
    if plots is not None:
        for p in write_delta_plots(res, plots).values():
            console.print(f"wrote {p}")
    print_tables(tables.delta_tables(res))


@analyze_app.command("lmc")
@friendly
def lmc_cmd(
    a: Annotated[str, Opt("--a", help="endpoint A")],
    b: Annotated[str, Opt("--b", help="endpoint B")],
    base: Annotated[str | None, Opt(help="θ₀: adds the base→A and base→B paths")] = None,
    task: Annotated[str | None, Opt(help="task (default: A's run task)")] = None,
    points: Annotated[int, Opt(min=2, help="λ grid size")] = _LMC.points,
    limit: Annotated[int | None, Opt(min=1, help="evaluate on the first N held-out items")] = _LMC.limit,
    max_new_tokens: Annotated[int | None, Opt(min=1)] = _LMC.max_new_tokens,
    kl: Annotated[bool, Opt("--kl", help="also KL(π_θ(λ) ‖ π_base) (π_A without --base)")] = _LMC.kl,
    kl_prompts: Annotated[int, Opt(min=0)] = _LMC.kl_prompts,
    batch_size: Annotated[int, Opt(min=1)] = _LMC.batch_size,
    seed: SeedOpt = _LMC.seed,
    dtype: DtypeOpt = _LMC.dtype,
    device: DeviceOpt = _LMC.device,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Reward/accuracy along θ(λ) = (1−λ)θ_A + λθ_B and the barrier, for base→A, base→B and A→B."""
    check_out(out, "file")
    _threads(threads)
    from evotune.analysis.lmc import lmc
    from evotune.backends.resolve import resolve_entry
    from evotune.errors import AnalysisError

    ea = resolve_entry(a)
    t = task or ea.task_config
    if t is None:
        raise AnalysisError("pass --task (A is not a run that brings its task)")
    mnt = max_new_tokens or (ea.max_new_tokens if task is None else None)
    res = lmc(ea, b, t, base, log=_log, points=points, limit=limit, max_new_tokens=mnt, batch_size=batch_size,
              kl=kl, kl_prompts=kl_prompts, seed=seed, dtype=dtype, device=device)
    _write(out, res)
    print_tables([tables.lmc_table(res)])


@analyze_app.command("robustness")
@friendly
def robustness_cmd(
    model: Annotated[str, Opt("--model", help="model or run")],
    sigmas: Annotated[str, Opt(help="comma-separated noise scales σ")] = ",".join(map(str, _ROB.sigmas)),
    trials: Annotated[int, Opt(min=1, help="seeded trials per σ")] = _ROB.trials,
    params: Annotated[
        str, Opt(help="glob(s) of parameters to perturb, e.g. 'lm_head*' (tied: the embedding)")
    ] = ",".join(_ROB.globs()),
    task: Annotated[str | None, Opt(help="task (default: the run's task)")] = None,
    limit: Annotated[int | None, Opt(min=1)] = _ROB.limit,
    max_new_tokens: Annotated[int | None, Opt(min=1)] = _ROB.max_new_tokens,
    kl: Annotated[bool, Opt("--kl", help="also KL(π_perturbed ‖ π_unperturbed)")] = _ROB.kl,
    kl_prompts: Annotated[int, Opt(min=0)] = _ROB.kl_prompts,
    batch_size: Annotated[int, Opt(min=1)] = _ROB.batch_size,
    seed: SeedOpt = _ROB.seed,
    dtype: DtypeOpt = _ROB.dtype,
    device: DeviceOpt = _ROB.device,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Held-out reward after seeded weight noise σ·ε: degradation vs unperturbed, mean ± std."""
    check_out(out, "file")
    _threads(threads)
    from evotune.analysis.common import parse_floats
    from evotune.analysis.robustness import robustness

    settings = RobustnessSettings(
        seed=seed, dtype=dtype, device=device, sigmas=tuple(parse_floats(sigmas)), trials=trials, params=params,
        limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size, kl=kl, kl_prompts=kl_prompts,
    )
    res = robustness(model, task, settings, log=_log)
    _write(out, res)
    print_tables([tables.robustness_table({res['model']: res})])
    if res["tied_aliases"]:
        console.print(f"[yellow]tied: {res['tied_aliases']} — the input embeddings were perturbed too[/]")


def _cc(name: str) -> Any:
    """A `compare` option's default, from CompareConfig (lists as the comma-separated text the option takes)."""
    v = default_of(CompareConfig, name)
    return ",".join(map(str, v)) if isinstance(v, list) else v


def _cc_help(name: str, extra: str = "") -> str:
    return f"{help_of(CompareConfig, name)}{extra}"


@app.command("compare")
@friendly
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(help="runs or models to compare")],
    base: Annotated[str | None, Opt(help=_cc_help("base"))] = _cc("base"),
    tasks: Annotated[str | None, Opt(help="comma-separated tasks (default: the runs' own tasks)")] = None,
    out: Annotated[Path, Opt("--out", help="report directory (index.html, summary.json)")] = Path(_cc("out_dir")),
    limit: Annotated[int | None, Opt(min=1, help=_cc_help("limit"))] = _cc("limit"),
    kl_prompts: Annotated[int, Opt(min=0, help=_cc_help("kl_prompts"))] = _cc("kl_prompts"),
    max_new_tokens: Annotated[int | None, Opt(min=1, help=_cc_help("max_new_tokens"))] = _cc("max_new_tokens"),
    points: Annotated[int, Opt("--points", min=2, help=_cc_help("lmc_points"))] = _cc("lmc_points"),
    lmc_limit: Annotated[int | None, Opt(min=1, help=_cc_help("lmc_limit"))] = _cc("lmc_limit"),
    lmc_kl: Annotated[bool, Opt("--lmc-kl", help=_cc_help("lmc_kl"))] = _cc("lmc_kl"),
    lmc_models: Annotated[str | None, Opt(help=_cc_help("lmc_models", "; comma-separated"))] = _cc("lmc_models"),
    sigmas: Annotated[str, Opt(help=_cc_help("sigmas"))] = _cc("sigmas"),
    trials: Annotated[int, Opt(min=1, help=_cc_help("trials"))] = _cc("trials"),
    params: Annotated[str, Opt("--params", help=_cc_help("robust_params"))] = _cc("robust_params"),
    robust_base: Annotated[bool, Opt(help=_cc_help("robust_base"))] = _cc("robust_base"),
    skip: Annotated[str | None, Opt(help="analyses to skip: kl,delta,lmc,robustness")] = None,
    samples: Annotated[int, Opt(min=0, help=_cc_help("samples"))] = _cc("samples"),
    batch_size: Annotated[int, Opt(min=1)] = _cc("batch_size"),
    seed: SeedOpt = _cc("seed"),
    dtype: DtypeOpt = _cc("dtype"),
    device: DeviceOpt = _cc("device"),
    threads: ThreadsOpt = None,
) -> None:
    """Run every analysis on runs/models and write one self-contained HTML report + summary.json.

    Finished analyses are saved under OUT/steps/; rerunning the same command reuses them.
    """
    check_out(out)
    _threads(threads)
    from evotune.analysis.common import parse_floats
    from evotune.comparison import compare
    from evotune.config import build_config

    cc = build_config(None, {
        "base": base, "tasks": split_csv(tasks) or [], "out_dir": str(out), "limit": limit, "kl_prompts": kl_prompts,
        "max_new_tokens": max_new_tokens, "lmc_points": points, "lmc_limit": lmc_limit, "lmc_kl": lmc_kl,
        "lmc_models": split_csv(lmc_models) or None, "sigmas": parse_floats(sigmas), "trials": trials,
        "robust_params": params, "robust_base": robust_base, "skip": split_csv(skip) or [], "samples": samples,
        "seed": seed, "dtype": dtype, "device": device, "batch_size": batch_size,
    }, CompareConfig)
    s = compare(runs, cc, log=_log)
    _show_comparison(s)
    console.print(f"wrote {Path(out) / 'index.html'} and {Path(out) / 'summary.json'}")
    print(json.dumps({"report": str(Path(out) / "index.html"), "summary": str(Path(out) / "summary.json")}))
    if s["errors"]:
        raise typer.Exit(1)


def _show_comparison(s: dict[str, Any]) -> None:
    """The headline table of a comparison, its LMC barriers and its failed analyses."""
    t = Table(title=f"comparison against {s['base']['spec']} on {s['primary_task']}")
    for col in ("model", "reward", "accuracy", "on-task KL", "off-task KL", "‖Δ‖/‖θ₀‖", "hacking"):
        t.add_column(col)
    rel = (s.get("update_norms") or {}).get("total", {})
    flags = {r["model"]: r["hacking"] for r in s["hacking"] if r["source"].startswith("compare")}
    for p in s["reward_kl"]:
        t.add_row(
            p["model"],
            _f(p.get("reward")),
            _f(p.get("accuracy")),
            _f(p.get("kl")),
            _f(p.get("off_task_kl")),
            _f(rel.get(p["model"], {}).get("rel_norm")),
            _f(flags.get(p["model"])),
        )
    console.print(t)
    for p in (s.get("lmc") or {}).get("pairs", []):
        console.print(
            f"LMC {p['name']}: reward barrier {_f(p['barrier_reward']['height'])} "
            f"at λ={p['barrier_reward']['lambda']:.2f}"
        )
    for k, v in s["errors"].items():
        console.print(f"[red]{k} failed:[/] {v}")
