"""Render a `compare` summary as one self-contained HTML page (plots embedded as base64 PNG).

Rendering reads only the summary dict, so a report can be re-rendered from `summary.json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evotune.report import plots, tables
from evotune.report.html import esc, fmt, img, page, para, table
from evotune.report.tables import pm

SECTIONS = ("overview", "rewards", "reward-kl", "kl", "delta", "lmc", "robustness", "hacking", "samples")


def _tables(ts: Sequence[tables.Table]) -> str:
    return "".join(f"<h3>{esc(t.title)}</h3>" + table(t.columns, t.rows) + (para(t.note, "note") if t.note else "")
                   for t in ts)


def _missing(s: Mapping[str, Any], key: str) -> str:
    err = (s.get("errors") or {}).get(key)
    return para(f"not available: {err}" if err else "skipped", "err" if err else "note")


def _overview(s: Mapping[str, Any]) -> str:
    rows = [
        [e["label"], e.get("method") or "model", e.get("task") or "–", e["spec"], e["path"]]
        for e in s["entries"]
    ]
    rows.insert(0, [s["base"]["label"], "base", "–", s["base"]["spec"], s["base"]["path"]])
    body = table(["label", "kind", "task", "argument", "weights"], rows)
    body += para(f"tasks: {', '.join(s['tasks'])}; primary task (LMC, robustness): {s['primary_task']}")
    body += table(
        ["setting", "value"],
        [[k, v if not isinstance(v, dict | list) else str(v)] for k, v in s["settings"].items()],
    )
    if s.get("errors"):
        body += "".join(para(f"{k}: {v}", "err") for k, v in s["errors"].items())
    if s.get("timing"):
        body += table(["analysis", "seconds"], [[k, round(v, 1)] for k, v in s["timing"].items()])
    return body


def _rewards(s: Mapping[str, Any]) -> str:
    r = s.get("rewards") or {}
    if not r:
        return _missing(s, "evaluation")
    tasks = s["tasks"]
    heads = ["model"] + [f"{t} reward" for t in tasks] + [f"{t} accuracy" for t in tasks]
    rows = [
        [m]
        + [pm(per.get(t), "reward_mean", "reward_std") for t in tasks]
        + [per.get(t, {}).get("accuracy") for t in tasks]
        for m, per in r.items()
    ]
    return table(heads, rows) + para(
        "greedy decoding on each task's held-out split (reward mean ± std).", "note"
    )


def _reward_kl(s: Mapping[str, Any]) -> str:
    pts = s.get("reward_kl") or []
    if not pts or all(p.get("kl") is None for p in pts):
        return _missing(s, "kl")
    body = img(plots.reward_kl_figure(pts), "reward-KL plane")
    body += table(
        ["model", "task", "reward", "accuracy", "on-task KL (exact) ± se", "on-task k3", "off-task KL"],
        [
            [
                p["model"],
                p["task"],
                p.get("reward"),
                p.get("accuracy"),
                pm({"mean": p.get("kl"), "se": p.get("kl_se")}),
                p.get("kl_k3"),
                p.get("off_task_kl"),
            ]
            for p in pts
        ],
    )
    return body


def _kl(s: Mapping[str, Any]) -> str:
    kl = s.get("kl")
    if not kl:
        return _missing(s, "kl")
    body = img(plots.kl_figure(kl), "KL by source")
    body += para(
        "per-token KL(π_model ‖ π_base) on completions sampled from the model at T=1; mean ± SE "
        "clustered by sequence. k1 = −log r, k2 = ½(log r)², k3 = (r−1) − log r with r = π_base/π_model; "
        "exact = full-vocabulary KL at the sampled positions.",
        "note",
    )
    body += _tables(tables.kl_tables(kl))
    return body


def _delta(s: Mapping[str, Any]) -> str:
    d = s.get("delta")
    if not d:
        return _missing(s, "delta")
    figs = plots.delta_figures(d)
    body = "".join(img(png, name) for name, png in figs.items())
    body += _tables(tables.delta_tables(d))
    return body


def _lmc(s: Mapping[str, Any]) -> str:
    lm = s.get("lmc")
    if not lm:
        return _missing(s, "lmc")
    body = img(plots.lmc_figure(lm), "linear mode connectivity")
    body += para(f"task {lm['task']}, {lm['points']} points, limit {lm['limit']}.", "note")
    body += _tables([tables.lmc_table(lm)])
    return body


def _robustness(s: Mapping[str, Any]) -> str:
    rb = s.get("robustness")
    if not rb:
        return _missing(s, "robustness")
    body = img(plots.robustness_figure(rb), "robustness")
    return body + _tables([tables.robustness_table(rb)])


def _hacking(s: Mapping[str, Any]) -> str:
    rows = s.get("hacking") or []
    if not rows:
        return _missing(s, "evaluation")
    keys = [k for k in rows[0] if k.startswith("hack_")]
    return table(
        ["model", "source"] + [k.removeprefix("hack_") for k in keys] + ["flag", "reason"],
        [
            [r["model"], r["source"]] + [r.get(k) for k in keys] + [r.get("hacking"), r.get("reason")]
            for r in rows
        ],
    )


def _samples(s: Mapping[str, Any]) -> str:
    smp = s.get("samples") or {}
    if not smp:
        return _missing(s, "evaluation")
    body = ""
    models = [s["base"]["label"], *s["models"]]
    for task, rows in smp.items():
        by_id: dict[str, dict[str, Any]] = {}
        for r in rows:
            by_id.setdefault(r["id"], {"prompt": r["prompt"]})[r["model"]] = r
        out = []
        for ex in by_id.values():
            cells = [ex["prompt"]]
            for m in models:
                r = ex.get(m)
                cells.append(
                    "–"
                    if r is None
                    else f"{r['completion']}\n[reward {fmt(r['reward'], 3)}"
                    f"{', correct' if r['correct'] else ''}]"
                )
            out.append(cells)
        body += f"<h3>{esc(task)}</h3>" + table(
            ["prompt", *models], out, text_cols=tuple(range(len(models) + 1))
        )
    return body


def render_html(summary: Mapping[str, Any], extra_sections: Sequence[tuple[str, str, str]] = ()) -> str:
    """The full report page for a `compare` summary; `extra_sections` (id, title, html) go first."""
    parts = {
        "overview": ("Overview", _overview),
        "rewards": ("Reward and accuracy", _rewards),
        "reward-kl": ("Reward–KL plane", _reward_kl),
        "kl": ("KL drift", _kl),
        "delta": ("Update geometry", _delta),
        "lmc": ("Linear mode connectivity", _lmc),
        "robustness": ("Perturbation robustness", _robustness),
        "hacking": ("Reward hacking", _hacking),
        "samples": ("Sample completions", _samples),
    }
    sections = [*extra_sections, *((sid, title, fn(summary)) for sid, (title, fn) in parts.items())]
    return page("evotune comparison: " + ", ".join(summary["models"]), sections)
