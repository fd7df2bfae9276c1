"""Render a `compare` summary as one self-contained HTML page (plots embedded as base64 PNG).

Rendering reads only the summary dict, so a report can be re-rendered from `summary.json`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


KL_NOTE = (
    "per-token KL(π_model ‖ π_base) on completions sampled from the model at T=1; mean ± SE "
    "clustered by sequence. k1 = −log r, k2 = ½(log r)², k3 = (r−1) − log r with r = π_base/π_model; "
    "exact = full-vocabulary KL at the sampled positions."
)


def _analysis(
    s: Mapping[str, Any],
    key: str,
    figures: Callable[[Any], Mapping[str, bytes]],
    tabs: Callable[[Any], Sequence[tables.Table]],
    note: Callable[[Any], str] = lambda _: "",
    error_key: str | None = None,
) -> str:
    """One analysis section: its figures, a note and its tables, or why it is missing."""
    res = s.get(key)
    if not res:
        return _missing(s, error_key or key)
    body = "".join(img(png, name) for name, png in figures(res).items())
    text = note(res)
    return body + (para(text, "note") if text else "") + _tables(tabs(res))


def _kl(s: Mapping[str, Any]) -> str:
    return _analysis(s, "kl", lambda r: {"KL by source": plots.kl_figure(r)}, tables.kl_tables, lambda _: KL_NOTE)


def _delta(s: Mapping[str, Any]) -> str:
    return _analysis(s, "delta", plots.delta_figures, tables.delta_tables)


def _lmc(s: Mapping[str, Any]) -> str:
    return _analysis(
        s, "lmc", lambda r: {"linear mode connectivity": plots.lmc_figure(r)}, lambda r: [tables.lmc_table(r)],
        lambda r: f"task {r['task']}, {r['points']} points, limit {r['limit']}.",
    )


def _robustness(s: Mapping[str, Any]) -> str:
    return _analysis(
        s, "robustness", lambda r: {"robustness": plots.robustness_figure(r)}, lambda r: [tables.robustness_table(r)]
    )


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
