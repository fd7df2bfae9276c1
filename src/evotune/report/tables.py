"""The analyses' results as tables (title, columns, rows): one layout for the HTML report and the terminal.

`render.py` turns a `Table` into HTML, the CLI into a rich table; both format cells with `html.fmt`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evotune.report.html import fmt
from evotune.stats import barrier_items, t_interval


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""


def pm(cell: Mapping[str, Any] | None, mean: str = "mean", se: str = "se") -> str:
    """`mean ± spread` of a result cell ("–" when there is none)."""
    if not cell:
        return "–"
    return f"{fmt(cell.get(mean))} ± {fmt(cell.get(se), 2)}"


def kl_tables(kl: Mapping[str, Any]) -> list[Table]:
    """Per estimator: KL(π_model ‖ π_base) per token, prompt source × model, the on-task cell tagged."""
    out = []
    for est in ("exact", "k1", "k2", "k3"):
        t = Table(f"KL per token — {est}", ["source", *kl["models"]], note="mean ± SE clustered by sequence")
        for src in kl["sources"]:
            t.rows.append(
                [src, *(pm(kl["cells"][src][m][est]) + (" (on-task)" if kl["on_task"].get(m) == src else "")
                        for m in kl["models"])]
            )
        out.append(t)
    return out


def delta_tables(d: Mapping[str, Any]) -> list[Table]:
    """Update size in total, per module type and per layer, and the cosine between models' updates."""
    models = list(d["models"])
    out = [
        Table("totals", ["model", "‖Δ‖", "‖Δ‖/‖θ₀‖"],
              [[m, d["total"]["delta_norm"][i], d["total"]["rel_norm"][i]] for i, m in enumerate(models)]),
        Table("per module type (‖Δ‖/‖θ₀‖)", ["module", *models], [[k, *g["rel_norm"]] for k, g in d["modules"].items()]),
        Table("per layer (‖Δ‖/‖θ₀‖)", ["layer", *models], [[k, *g["rel_norm"]] for k, g in d["layers"].items()]),
    ]
    if len(models) > 1:
        out.append(Table("cosine of Δ (all weights)", ["", *models],
                         [[m, *d["total"]["cosine"][i]] for i, m in enumerate(models)]))
    if d.get("tied_lm_head"):
        out[0].note = "lm_head is tied to the input embeddings: it is counted once, under embeddings."
    return out


def _paired(p: Mapping[str, Any]) -> str:
    """The paired per-item barrier `mean [95%]` of a path, or n/a when its per-item rewards were not kept."""
    rows = p.get("reward_items")
    if not rows or any(r is None for r in rows):
        return "n/a"
    lam, gaps = barrier_items(p["lambdas"], rows)
    iv = t_interval(gaps, unit="items")
    m, lo, hi = iv.mean, iv.lo, iv.hi
    return f"{m:.3g} [{lo:.3g}, {hi:.3g}] at λ={lam:.2g}" if lo == lo else f"{m:.3g} at λ={lam:.2g}"


def lmc_table(lm: Mapping[str, Any]) -> Table:
    """Per interpolation path: endpoint rewards, the minimum and the reward/accuracy barriers."""
    return Table(
        f"linear mode connectivity on {lm['task']}",
        ["pair", "R(0)", "R(1)", "min R", "reward barrier", "at λ", "paired barrier [95%]", "accuracy barrier",
         "at λ"],
        [
            [p["name"], p["reward"][0], p["reward"][-1], min(p["reward"]), p["barrier_reward"]["height"],
             p["barrier_reward"]["lambda"], _paired(p), p["barrier_accuracy"]["height"],
             p["barrier_accuracy"]["lambda"]]
            for p in lm["pairs"]
        ],
        note="barrier = max_λ[(1−λ)R_A + λR_B − R(θ(λ))]; paired: the mean over items of "
        "(1−λ)R_A,ᵢ + λR_B,ᵢ − R_λ,ᵢ at its largest λ, with a 95% t interval over the same items",
    )


def robustness_table(rb: Mapping[str, Mapping[str, Any]]) -> Table:
    """Per model and σ: reward, its drop from the unperturbed model and accuracy (mean ± std over trials)."""
    t = Table("robustness to weight noise σ·ε",
              ["model", "σ", "unperturbed reward", "reward (mean ± std)", "drop (mean ± std)", "accuracy"])
    for m, r in rb.items():
        for c in r["curves"]:
            t.rows.append([m, c["sigma"], r["baseline"]["reward"], pm(c, "reward_mean", "reward_std"),
                           pm(c, "degradation_mean", "degradation_std"), pm(c, "accuracy_mean", "accuracy_std")])
    first = next(iter(rb.values()), None)
    if first is not None:
        t.note = f"perturbed {first['params']} ({first['numel']} weights), {first['trials']} seeded trials per σ"
        if first.get("tied_aliases"):
            t.note += f"; tied aliases {first['tied_aliases']} (perturbing them perturbs the input embeddings too)"
    return t
