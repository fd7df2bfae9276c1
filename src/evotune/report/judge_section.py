"""The judge tournament as an HTML section (for the comparison report) or a page of its own.

Rendering reads only the tournament summary (`judge.json`), so it can be re-rendered at any time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evotune.errors import AnalysisError
from evotune.report.html import esc, fmt, page, para, table
from evotune.report.render import render_html
from evotune.runs.rundir import atomic_write_json, atomic_write_text


def _interval(cell: Mapping[str, Any]) -> str:
    return f"{fmt(cell['elo'], 4)} [{fmt(cell['lo'], 4)}, {fmt(cell['hi'], 4)}]"


def judge_html(s: Mapping[str, Any]) -> str:
    """The whole judge section: ratings, win rates, position bias, scorer agreement, collapse, samples."""
    groups = list(s["criteria"])
    body = para(
        f"judge {s['judge']} on {s['n_prompts']} held-out {s['task']} prompts; every pair compared in both orders "
        "(a win counts only if it survives the swap, else a tie), Bradley–Terry ratings on the Elo scale "
        f"(1000 = average) with bootstrap-over-prompts 95% intervals ({s['settings']['n_boot']} resamples).",
        "note",
    )
    return body + "".join(part(s, groups) for part in (_ratings, _win_rates, _position, _agreement, _replies))


def _ratings(s: Mapping[str, Any], groups: list[str]) -> str:
    models, sc = list(s["models"]), s.get("scorer") or {}
    heads = ["model"] + [f"{g} Elo [95% CI]" for g in groups] + [f"{g} soft Elo [95% CI]" for g in groups]
    rows = [[m] + [_interval(s[g]["elo"][m]) for g in groups] + [_interval(s[g]["soft"]["elo"][m]) for g in groups]
            for m in models]
    if sc.get("per_model"):
        keys = list(next(iter(sc["per_model"].values())))
        heads += [f"scorer {k} (mean)" for k in keys]
        for r, m in zip(rows, models, strict=True):
            r += [sc["per_model"][m][k] for k in keys]
    return "<h3>ratings</h3>" + table(heads, rows) + para(
        "hard: verdicts per order, Bradley–Terry with a position term; soft: σ(½(ℓ_AB − ℓ_BA)) from the judge's "
        "log-odds in both orders (position bias subtracted), Bradley–Terry on the fractional wins.", "note")


def _win_rates(s: Mapping[str, Any], groups: list[str]) -> str:
    models, body = list(s["models"]), ""
    for g in groups:
        for kind, src in (("hard", s[g]), ("soft", s[g]["soft"])):
            wr = src["win_rate"]
            body += f"<h3>win rate, {esc(g)}, {kind} (row beats column)</h3>" + table(
                [""] + models, [[m] + [None if i == j else wr[i][j] for j in range(len(models))]
                                for i, m in enumerate(models)]
            )
    return body


def _position(s: Mapping[str, Any], groups: list[str]) -> str:
    return "<h3>position bias</h3>" + table(
        ["criterion", "judged pairs", "first chosen", "mean log-odds first vs second", "fitted position effect [95% CI]",
         "order-consistent verdicts"],
        [[g, s[g]["position"].get("n"), s[g]["position"].get("first_rate"), s[g]["position"].get("bias_logit"),
          f"{fmt(s[g]['position_effect']['logit'], 3)} [{fmt(s[g]['position_effect']['lo'], 3)}, "
          f"{fmt(s[g]['position_effect']['hi'], 3)}]", s[g]["position"].get("consistency")] for g in groups],
    ) + para("an unbiased judge chooses the first reply half the time; the position term of the hard model and "
             "the order difference of the soft verdicts take a constant bias out of the ratings.", "note")


def _agreement(s: Mapping[str, Any], groups: list[str]) -> str:
    sc = s.get("scorer") or {}
    if not sc:
        return ""
    return "<h3>agreement with the training scorer</h3>" + table(
        ["criterion", "scorer view", "decisive (hard)", "same direction (hard)", "τ (hard)", "decisive (soft)",
         "same direction (soft)", "τ (soft)"],
        [[g, sc[g]["scorer_view"], sc[g]["n"], sc[g]["rate"], sc[g]["rank_tau"], sc[g]["soft_n"],
          sc[g]["soft_rate"], sc[g]["soft_rank_tau"]] for g in groups if g in sc],
    ) + para("same direction: on judged (pair, prompt)s, the scorer's view prefers the reply the judge prefers; "
             "τ: Kendall's τ between the judge's Elo ranking and the scorer's mean per model.", "note")


def _replies(s: Mapping[str, Any], groups: list[str]) -> str:
    """What the replies look like: mode collapse, refusal phrases, and a few samples side by side."""
    models, body = list(s["models"]), ""
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


def write_judge_report(summary: dict[str, Any], out_dir: str | Path, report_dir: str | Path | None = None) -> None:
    """`judge.html` beside `judge.json`, and the judge section in a `compare` report when given."""
    atomic_write_text(Path(out_dir) / "judge.html", judge_page(summary))
    if report_dir is not None:
        add_to_report(report_dir, summary)


def add_to_report(report_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Re-render a `compare` report (`summary.json` there) with the judge section first."""
    rd = Path(report_dir)
    if not (rd / "summary.json").is_file():
        raise AnalysisError(f"--report {rd}: no summary.json there (make one with `evotune compare ... --out {rd}`)")
    compare_summary = json.loads((rd / "summary.json").read_text())
    atomic_write_json(rd / "judge.json", summary)
    html = render_html(compare_summary, extra_sections=[("judge", "Judge tournament", judge_html(summary))])
    atomic_write_text(rd / "index.html", html)
    return rd / "index.html"
