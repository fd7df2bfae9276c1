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

from evotune.cli.app import DeviceOpt, DtypeOpt, analyze_app, app
from evotune.cli.common import console, friendly, print_tables, split_csv
from evotune.report import tables

Opt = typer.Option

OutOpt = Annotated[Path | None, Opt("--out", help="write the JSON result here")]
SeedOpt = Annotated[int, Opt(help="sampling / noise seed")]
ThreadsOpt = Annotated[int | None, Opt(help="torch threads (default: torch's own)")]


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
    n_prompts: Annotated[int, Opt(help="prompts per task / general set")] = 16,
    max_new_tokens: Annotated[int | None, Opt(help="default: each task's own")] = None,
    general: Annotated[bool, Opt(help="include the built-in general prompts (off-task)")] = True,
    seed: SeedOpt = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Per-token KL(π_A ‖ π_B) on samples from A at T=1: k1, k2, k3 and exact, on- and off-task."""
    _threads(threads)
    from evotune.analysis.kl import kl_matrix

    models = _models(model)
    res = kl_matrix(
        models, _base_for(models, base), split_csv(tasks), n_prompts, max_new_tokens, seed, general, dtype,
        device=device,
    )
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
    points: Annotated[int, Opt(help="λ grid size")] = 11,
    limit: Annotated[int | None, Opt(help="evaluate on the first N held-out items")] = None,
    max_new_tokens: Annotated[int | None, Opt()] = None,
    kl: Annotated[bool, Opt("--kl", help="also KL(π_θ(λ) ‖ π_base) (π_A without --base)")] = False,
    kl_prompts: Annotated[int, Opt()] = 8,
    batch_size: Annotated[int, Opt()] = 64,
    seed: SeedOpt = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Reward/accuracy along θ(λ) = (1−λ)θ_A + λθ_B and the barrier, for base→A, base→B and A→B."""
    _threads(threads)
    from evotune.analysis.lmc import lmc
    from evotune.backends.resolve import resolve_entry
    from evotune.errors import AnalysisError

    ea = resolve_entry(a)
    t = task or ea.task_config
    if t is None:
        raise AnalysisError("pass --task (A is not a run that brings its task)")
    mnt = max_new_tokens or (ea.max_new_tokens if task is None else None)
    res = lmc(
        ea,
        b,
        t,
        base,
        points,
        limit=limit,
        max_new_tokens=mnt,
        batch_size=batch_size,
        kl=kl,
        kl_prompts=kl_prompts,
        seed=seed,
        dtype=dtype,
        device=device,
        log=_log,
    )
    _write(out, res)
    print_tables([tables.lmc_table(res)])


@analyze_app.command("robustness")
@friendly
def robustness_cmd(
    model: Annotated[str, Opt("--model", help="model or run")],
    sigmas: Annotated[str, Opt(help="comma-separated noise scales σ")] = "0.001,0.003,0.01",
    trials: Annotated[int, Opt(help="seeded trials per σ")] = 8,
    params: Annotated[
        str, Opt(help="glob(s) of parameters to perturb, e.g. 'lm_head*' (tied: the embedding)")
    ] = "*",
    task: Annotated[str | None, Opt(help="task (default: the run's task)")] = None,
    limit: Annotated[int | None, Opt()] = None,
    max_new_tokens: Annotated[int | None, Opt()] = None,
    kl: Annotated[bool, Opt("--kl", help="also KL(π_perturbed ‖ π_unperturbed)")] = False,
    kl_prompts: Annotated[int, Opt()] = 8,
    batch_size: Annotated[int, Opt()] = 64,
    seed: SeedOpt = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Held-out reward after seeded weight noise σ·ε: degradation vs unperturbed, mean ± std."""
    _threads(threads)
    from evotune.analysis.common import parse_floats
    from evotune.analysis.robustness import robustness

    res = robustness(
        model,
        task,
        parse_floats(sigmas),
        trials,
        params,
        limit,
        max_new_tokens,
        batch_size,
        seed,
        kl,
        kl_prompts,
        dtype,
        device=device,
        log=_log,
    )
    _write(out, res)
    print_tables([tables.robustness_table({res['model']: res})])
    if res["tied_aliases"]:
        console.print(f"[yellow]tied: {res['tied_aliases']} — the input embeddings were perturbed too[/]")


@app.command("compare")
@friendly
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(help="runs or models to compare")],
    base: Annotated[str | None, Opt(help="θ₀ (default: the first run's base model)")] = None,
    tasks: Annotated[str | None, Opt(help="comma-separated tasks (default: the runs' own tasks)")] = None,
    out: Annotated[Path, Opt("--out", help="report directory (index.html, summary.json)")] = Path("report"),
    limit: Annotated[int | None, Opt(help="held-out items per evaluation")] = 32,
    kl_prompts: Annotated[int, Opt(help="prompts per source for KL")] = 16,
    max_new_tokens: Annotated[int | None, Opt()] = None,
    points: Annotated[int, Opt(help="LMC λ grid size")] = 11,
    lmc_limit: Annotated[int | None, Opt(help="held-out items per LMC point (default: --limit)")] = None,
    lmc_kl: Annotated[bool, Opt("--lmc-kl", help="KL to the base along LMC paths")] = False,
    lmc_models: Annotated[str | None, Opt(help="comma-separated label globs of the models that get LMC paths "
                                           "(default: all)")] = None,
    sigmas: Annotated[str, Opt(help="robustness σ grid")] = "0.001,0.003,0.01",
    trials: Annotated[int, Opt(help="robustness trials per σ")] = 4,
    params: Annotated[str, Opt(help="robustness: parameters to perturb (glob)")] = "*",
    robust_base: Annotated[bool, Opt(help="also measure the base model's robustness")] = True,
    skip: Annotated[str | None, Opt(help="analyses to skip: kl,delta,lmc,robustness")] = None,
    samples: Annotated[int, Opt(help="sample completions per task in the report")] = 4,
    batch_size: Annotated[int, Opt()] = 64,
    seed: SeedOpt = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Run every analysis on runs/models and write one self-contained HTML report + summary.json."""
    _threads(threads)
    from evotune.analysis.common import parse_floats
    from evotune.comparison import CompareConfig, compare
    from evotune.config import build_config

    cc = build_config(None, {
        "base": base, "tasks": split_csv(tasks) or [], "out_dir": str(out), "limit": limit, "kl_prompts": kl_prompts,
        "max_new_tokens": max_new_tokens, "lmc_points": points, "lmc_limit": lmc_limit, "lmc_kl": lmc_kl,
        "lmc_models": split_csv(lmc_models) or None, "sigmas": parse_floats(sigmas), "trials": trials, "robust_params": params, "robust_base": robust_base,
        "skip": split_csv(skip) or [], "samples": samples, "seed": seed, "dtype": dtype, "device": device,
        "batch_size": batch_size,
    }, CompareConfig)
    s = compare(runs, cc, log=_log)
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
    console.print(f"wrote {Path(out) / 'index.html'} and {Path(out) / 'summary.json'}")
    print(json.dumps({"report": str(Path(out) / "index.html"), "summary": str(Path(out) / "summary.json")}))
    if s["errors"]:
        raise typer.Exit(1)
