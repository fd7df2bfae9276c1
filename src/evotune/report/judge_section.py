"""The judge tournament as an HTML section (for the comparison report) or a page of its own.

Rendering reads only the tournament summary (`judge.json`), so it can be re-rendered at any time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evotune.report.html import esc, fmt, page, para, table


def _interval(cell: Mapping[str, Any]) -> str:
    return f"{fmt(cell['elo'], 4)} [{fmt(cell['lo'], 4)}, {fmt(cell['hi'], 4)}]"


def judge_html(s: Mapping[str, Any]) -> str:
    models = list(s["models"])
    groups = list(s["criteria"])
    sc = s.get("scorer") or {}
    body = para(
        f"judge {s['judge']} on {s['n_prompts']} held-out {s['task']} prompts; every pair compared in both orders "
        "(a win counts only if it survives the swap, else a tie), Bradley–Terry ratings on the Elo scale "
        f"(1000 = average) with bootstrap-over-prompts 95% intervals ({s['settings']['n_boot']} resamples).",
        "note",
    )
    heads = ["model"] + [f"{g} Elo [95% CI]" for g in groups]
    rows = [[m] + [_interval(s[g]["elo"][m]) for g in groups] for m in models]
    if sc.get("per_model"):
        keys = list(next(iter(sc["per_model"].values())))
        heads += [f"scorer {k} (mean)" for k in keys]
        for r, m in zip(rows, models, strict=True):
            r += [sc["per_model"][m][k] for k in keys]
    body += "<h3>ratings</h3>" + table(heads, rows)
    for g in groups:
        wr = s[g]["win_rate"]
        body += f"<h3>win rate, {esc(g)} (row beats column)</h3>" + table(
            [""] + models, [[m] + [None if i == j else wr[i][j] for j in range(len(models))]
                            for i, m in enumerate(models)]
        )
    body += "<h3>position bias</h3>" + table(
        ["criterion", "judged pairs", "first chosen", "mean log-odds first vs second", "order-consistent verdicts"],
        [[g, s[g]["position"].get("n"), s[g]["position"].get("first_rate"), s[g]["position"].get("bias_logit"),
          s[g]["position"].get("consistency")] for g in groups],
    ) + para("an unbiased judge chooses the first reply half the time; order-dependent verdicts count as ties, "
             "so a constant position bias cancels out of the ratings.", "note")
    if sc:
        body += "<h3>agreement with the training scorer</h3>" + table(
            ["criterion", "scorer view", "decisive pairs", "same direction", "Kendall τ (model ranking)"],
            [[g, sc[g]["scorer_view"], sc[g]["n"], sc[g]["rate"], sc[g]["rank_tau"]] for g in groups if g in sc],
        )
    coll = s.get("collapse") or {}
    if coll:
        body += "<h3>mode collapse</h3>" + table(
            ["model", "mode share", "distinct-1", "distinct-2", "unique share", "most frequent reply"],
            [[m, c.get("mode_share"), c.get("distinct_1"), c.get("distinct_2"), c.get("unique_share"),
              c.get("mode_response")] for m, c in coll.items()],
            text_cols=(5,),
        )
    ref = s.get("refusal")
    if ref:
        kinds = sorted({k for v in ref.values() for k in v})
        body += "<h3>refusal phrases by prompt kind</h3>" + table(
            ["model"] + kinds, [[m] + [v.get(k) for k in kinds] for m, v in ref.items()]
        )
    smp = s.get("samples") or []
    if smp:
        body += "<h3>sample replies</h3>" + table(
            ["prompt", *models], [[f"[{r.get('kind') or ''}] {r['prompt']}"] + [r[m] for m in models] for r in smp],
            text_cols=tuple(range(len(models) + 1)),
        )
    return body


def judge_page(s: Mapping[str, Any]) -> str:
    return page(f"evotune judge tournament: {', '.join(s['models'])}", [("judge", "Judge tournament", judge_html(s))])
