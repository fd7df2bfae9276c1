"""The seed papers' claims, each with a stated numeric rule; verdicts are computed from measured numbers."""

from __future__ import annotations

import math
import statistics
from typing import Any

from evotune.analysis.common import mean_se
from evotune.comparison import BASE_LABEL

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"

CLAIM_RULES = {
    "comparable_reward": "holds if |mean_ES − mean_GRPO| ≤ 2·SE of the difference (or ≤ 5% of the base→best gain); "
    "does not hold if it exceeds both; inconclusive with < 2 seeds per method",
    "orthogonal_updates": "holds if every layer's mean |cos(Δ_ES, Δ_GRPO)| < 0.1; does not hold if the median layer's > 0.3",
    "es_moves_further": "holds if ‖Δ_ES‖ > 2·‖Δ_GRPO‖ for every seed pair; does not hold if ‖Δ_ES‖ ≤ ‖Δ_GRPO‖ for every pair",
    "es_drifts_more_off_task": "holds if mean off-task KL(ES) − KL(GRPO) > 2·SE; does not hold if < −2·SE",
    "barrier_between_solutions": "holds if the ES→GRPO reward barrier > 2·SE of the endpoint reward for every pair; "
    "does not hold if it is below 1·SE for every pair",
    "es_hacks_less": "hacking rate = the largest detector rate above the base model's (correct_lost: correct "
    "base answers turned wrong for a higher reward; empty, truncated, repetitive, ...), the largest over tasks per "
    "model; holds if ES's mean over seeds is lower than GRPO's by more than max(0.05, 2·SE of the difference); "
    "does not hold if higher by that much",
}


# -- statistics helpers -----------------------------------------------------------------------
def _fmt(m: float, se: float, digits: int = 3) -> str:
    if m != m:
        return "n/a"
    return f"{m:.{digits}g}" + (f" ± {se:.2g}" if se == se else "")


# -- the claims -------------------------------------------------------------------------------
def findings(summary: dict[str, Any], methods: dict[str, str], base_reward: float | None) -> list[dict[str, Any]]:
    """Claims (1)–(6) with the measured number, its spread and a verdict computed from them."""
    es = [m for m, k in methods.items() if k == "es"]
    gr = [m for m, k in methods.items() if k == "grpo"]
    primary = summary.get("primary_task")
    out = []

    # (1) comparable held-out reward
    rw = {m: (summary.get("rewards", {}).get(m, {}).get(primary) or {}).get("reward_mean") for m in es + gr}
    (me, se_e), (mg, se_g) = mean_se([rw[m] for m in es]), mean_se([rw[m] for m in gr])
    diff = me - mg
    se_d = math.sqrt(se_e**2 + se_g**2) if se_e == se_e and se_g == se_g else math.nan
    gain = max(me, mg) - base_reward if base_reward is not None else math.nan
    if len(es) < 2 or len(gr) < 2 or diff != diff:
        v = UNSURE
    elif abs(diff) <= 2 * se_d or (gain == gain and gain > 0 and abs(diff) <= 0.05 * gain):
        v = HOLDS
    else:
        v = FAILS
    out.append(_claim("comparable_reward", "ES and GRPO reach comparable held-out reward",
                      f"ES {_fmt(me, se_e)} vs GRPO {_fmt(mg, se_g)} (base {base_reward if base_reward is not None else 'n/a':.4g})"
                      if base_reward is not None else f"ES {_fmt(me, se_e)} vs GRPO {_fmt(mg, se_g)}", v))

    # (2) nearly orthogonal updates at every layer
    cos = summary.get("cosine") or {}
    labels = cos.get("models", [])
    per_layer = []
    for layer, mat in (cos.get("layers") or {}).items():
        vals = [abs(mat[labels.index(a)][labels.index(b)]) for a in es for b in gr if a in labels and b in labels]
        vals = [x for x in vals if x is not None and math.isfinite(x)]
        if vals:
            per_layer.append((layer, statistics.fmean(vals)))
    if per_layer:
        worst = max(per_layer, key=lambda t: t[1])
        med = statistics.median(v for _, v in per_layer)
        v = HOLDS if worst[1] < 0.1 else FAILS if med > 0.3 else UNSURE
        txt = f"median layer |cos| {med:.3f}, max {worst[1]:.3f} (layer {worst[0]}), {len(per_layer)} layers"
    else:
        v, txt = UNSURE, "no update-geometry data"
    out.append(_claim("orthogonal_updates", "ES and GRPO updates are nearly orthogonal at every layer", txt, v))

    # (3) ES moves the weights much further
    tot = (summary.get("update_norms") or {}).get("total") or {}
    ratios = [tot[a]["delta_norm"] / tot[b]["delta_norm"] for a in es for b in gr
              if a in tot and b in tot and tot[b]["delta_norm"]]
    if ratios:
        v = HOLDS if min(ratios) > 2 else FAILS if max(ratios) <= 1 else UNSURE
        rm, rs = mean_se(ratios)
        txt = f"‖Δ_ES‖/‖Δ_GRPO‖ = {_fmt(rm, rs)} (min {min(ratios):.3g}, max {max(ratios):.3g})"
    else:
        v, txt = UNSURE, "no update norms"
    out.append(_claim("es_moves_further", "ES moves the weights much further than GRPO", txt, v))

    # (4) ES drifts more off-task
    pts = {p["model"]: p for p in summary.get("reward_kl") or []}
    ke = mean_se([pts[m].get("off_task_kl") for m in es if m in pts and pts[m].get("off_task_kl") is not None])
    kg = mean_se([pts[m].get("off_task_kl") for m in gr if m in pts and pts[m].get("off_task_kl") is not None])
    d = ke[0] - kg[0]
    sd = math.sqrt(ke[1] ** 2 + kg[1] ** 2) if ke[1] == ke[1] and kg[1] == kg[1] else math.nan
    v = UNSURE if d != d or sd != sd else HOLDS if d > 2 * sd else FAILS if d < -2 * sd else UNSURE
    out.append(_claim("es_drifts_more_off_task", "ES drifts more off-task (per-token KL to the base)",
                      f"off-task KL ES {_fmt(*ke)} vs GRPO {_fmt(*kg)} nats/token", v))

    # (5) a barrier between ES and GRPO solutions
    pairs = [p for p in ((summary.get("lmc") or {}).get("pairs") or [])
             if {p.get("a"), p.get("b")} & set(es) and {p.get("a"), p.get("b")} & set(gr)]
    heights, thresholds = [], []
    for p in pairs:
        h = (p.get("barrier_reward") or {}).get("height")
        if h is None:
            continue
        heights.append(h)
        sd_end = [(summary.get("rewards", {}).get(m, {}).get(primary) or {}) for m in (p["a"], p["b"])]
        se_end = [c.get("reward_std", math.nan) / math.sqrt(max(c.get("n") or 1, 1)) for c in sd_end]
        thresholds.append(max(x for x in se_end if x == x) if any(x == x for x in se_end) else math.nan)
    if heights and all(t == t for t in thresholds):
        v = HOLDS if all(h > 2 * t for h, t in zip(heights, thresholds, strict=True)) else (
            FAILS if all(h < t for h, t in zip(heights, thresholds, strict=True)) else UNSURE)
        txt = f"reward barrier {', '.join(f'{h:.3g}' for h in heights)} (endpoint SE ≈ {statistics.fmean(thresholds):.2g})"
    else:
        v, txt = UNSURE, "no ES→GRPO interpolation measured"
    out.append(_claim("barrier_between_solutions", "A loss barrier separates ES and GRPO solutions", txt, v))

    # (6) which one hacks the reward, and how. A detector counts only what training added: its rate
    # minus the base model's on the same task (a base that already truncates 40% at a tight token
    # limit is not hacking; `correct_lost` is relative to the base by construction).
    per_model: dict[str, float] = {}  # a model's hacking rate: its largest excess over tasks and detectors
    rates: dict[str, dict[str, list[float]]] = {"es": {}, "grpo": {}}
    compare_rows = [r for r in summary.get("hacking") or [] if str(r.get("source", "")).startswith("compare eval")]
    base_rates = {
        (r["source"], k): r[k]
        for r in compare_rows
        if r["model"] == BASE_LABEL
        for k in r
        if k.startswith("hack_") and r[k] is not None
    }
    for row in compare_rows:
        meth = methods.get(row["model"])
        if meth is None:
            continue
        det = {
            k: max(0.0, row[k] - base_rates.get((row["source"], k), 0.0))
            for k in row
            if k.startswith("hack_") and row[k] is not None
        }
        per_model[row["model"]] = max([per_model.get(row["model"], 0.0), *det.values()])
        for k, val in det.items():
            rates[meth].setdefault(k, []).append(val)
    he = mean_se([x for m, x in per_model.items() if methods[m] == "es"])
    hg = mean_se([x for m, x in per_model.items() if methods[m] == "grpo"])
    if he[0] != he[0] or hg[0] != hg[0]:
        v = UNSURE
    else:
        diff = hg[0] - he[0]
        ses = [x for x in (he[1], hg[1]) if x == x]
        margin = max(0.05, 2 * math.sqrt(sum(x * x for x in ses)))
        v = HOLDS if diff > margin else FAILS if diff < -margin else UNSURE

    def how(meth: str) -> str:
        top = sorted(((statistics.fmean(xs), k) for k, xs in rates[meth].items() if xs), reverse=True)[:2]
        return ", ".join(f"{k.removeprefix('hack_')} +{m:.0%}" for m, k in top if m > 0) or "nothing above the base"

    out.append(_claim("es_hacks_less", "ES hacks the reward less than GRPO",
                      f"max detector rate above the base: ES {_fmt(*he)} ({how('es')}) vs GRPO {_fmt(*hg)} "
                      f"({how('grpo')})", v))
    return out


def _claim(key: str, claim: str, measured: str, verdict: str) -> dict[str, Any]:
    return {"key": key, "claim": claim, "measured": measured, "verdict": verdict, "rule": CLAIM_RULES[key]}
