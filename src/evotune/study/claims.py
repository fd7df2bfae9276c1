"""The seed papers' claims, each with a stated numeric rule; verdicts are computed from measured numbers."""

from __future__ import annotations

import math
import statistics
from typing import Any

from evotune.analysis.common import mean_se
from evotune.analysis.paired import barrier_items, mean_ci, t975
from evotune.analysis.passk import pass_at_k
from evotune.comparison import BASE_LABEL

HOLDS, FAILS, UNSURE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"
MIN_SEEDS = 3  # a spread from two points is not a spread: fewer seeds per method → inconclusive
EFFECT = 0.10  # the smallest effect that matters: 10% of the base→best held-out reward gain

CLAIM_RULES = {
    "comparable_reward": "d = mean_ES − mean_GRPO held-out reward with a 95% interval: the wider of the paired "
    "per-item t interval (items every model was scored on) and the seed-level t interval; holds if the interval lies "
    "within ±10% of the base→best gain, does not hold if it lies wholly outside it; inconclusive otherwise or with "
    "< 3 seeds per method",
    "orthogonal_updates": "holds if every layer's mean |cos(Δ_ES, Δ_GRPO)| < 0.1; does not hold if the median layer's > 0.3",
    "es_moves_further": "holds if ‖Δ_ES‖ > 2·‖Δ_GRPO‖ for every seed pair; does not hold if ‖Δ_ES‖ ≤ ‖Δ_GRPO‖ for every pair",
    "es_drifts_more_off_task": "holds if mean off-task KL(ES) − KL(GRPO) > 2·SE; does not hold if < −2·SE",
    "barrier_between_solutions": "per ES↔GRPO pair, the paired per-item barrier barrierᵢ = (1−λ)R_A,ᵢ + λR_B,ᵢ − "
    "R_λ,ᵢ at the λ with the largest mean, with its 95% t interval over items; holds if every pair's interval lies "
    "above 10% of the base→best gain, does not hold if every pair's lies below it; inconclusive otherwise (an "
    "interval straddling the line) or when nothing was learned (gain ≤ 0)",
    "es_hacks_less": "hacking rate = the largest detector rate above the base model's (correct_lost: correct "
    "base answers turned wrong for a higher reward; empty, truncated, repetitive, ...), the largest over tasks per "
    "model; holds if ES's mean over seeds is lower than GRPO's by more than max(0.05, 2·SE of the difference); "
    "does not hold if higher by that much",
    "es_seeds_agree_more": "d_l = mean cos(Δ_ES,i, Δ_ES,j) − mean cos(Δ_GRPO,i, Δ_GRPO,j) over seed pairs, per "
    "transformer layer; holds if the 95% t interval of mean_l d_l (over layers) lies above 0 and at the unembedding "
    "ES's cosine is not above GRPO's; does not hold if the interval lies below 0 or the unembedding exception is "
    "absent; inconclusive otherwise or with < 3 seeds per method",
    "grpo_unembedding_correlates": "per GRPO seed pair, u = cos at the unembedding (lm_head; the embedding when tied) "
    "and o = mean cos over transformer layers; holds if the 95% t interval of u − 2·o over pairs lies above 0 (u at "
    "least twice o) and mean u > 0.1 (a correlation at all); does not hold if that interval lies below 0; "
    "inconclusive otherwise or with < 3 seeds",
    "path_shape": "f = (R(½) − R(0)) / (R(1) − R(0)) on each base→model path (0.5 for a straight rise, ≈0 for flat "
    "then a jump at the end); holds if the 95% t interval of mean f_ES − mean f_GRPO (seeds) lies above 0.2; does not "
    "hold if it lies below 0.2; inconclusive otherwise, or with < 3 paths per method that gained > 10% of the "
    "base→best gain",
    "same_basin": "paired per-item barriers as in claim 5; holds if every ES↔ES and GRPO↔GRPO pair's interval lies "
    "below 10% of the base→best gain and some ES↔GRPO pair's lies above it; does not hold if a same-method pair's "
    "lies above it or every ES↔GRPO pair's lies below it; inconclusive otherwise",
    "grpo_more_robust": "degradation = unperturbed − mean perturbed reward at the smallest σ; holds if the 95% t "
    "interval of mean deg_ES − mean deg_GRPO (seeds) lies above 0 and, at some larger σ, ES's best-trial gain over "
    "its unperturbed reward has an interval above 0 (over seeds); does not hold if the degradation interval lies "
    "below 0; inconclusive otherwise or with < 3 seeds per method",
    "temperature_beats_perturbation": "pass@k of temperature vs weight-perturbation sampling on the same held-out "
    "prompts (each at its best setting chosen on train prompts), paired per prompt, at k = 1, 2, 4, …, n; holds if "
    "the 95% t interval of the difference lies above 0 at every k; does not hold if it lies below 0 at some k; "
    "inconclusive otherwise, when nothing was solved, or when pass@k was not measured (analysis.passk_n = 0)",
    "es_sampling_gradient_update": "H = GRPO's update on completions written by ES-perturbed members "
    "(grpo.sampler=es). On each measure where ES and GRPO differ (the 95% interval of their difference over seeds "
    "excludes 0) among held-out reward, off-task KL and hacking rate, H's position p = (x_H − mean x_GRPO) / "
    "(mean x_ES − mean x_GRPO) per H seed (0 = like GRPO, 1 = like ES), with its 95% t interval; holds (the sampler "
    "makes ES's difference) if every such interval lies above 0.5, does not hold (the update makes it) if every one "
    "lies below 0.5; inconclusive otherwise, when no measure separates ES and GRPO, or with < 3 seeds per method. "
    "Δ geometry (‖Δ_H‖/‖Δ_GRPO‖, cos(Δ_H, Δ_ES), cos(Δ_H, Δ_GRPO)) is reported beside it",
}



# -- statistics helpers -----------------------------------------------------------------------
def _fmt(m: float, se: float, digits: int = 3) -> str:
    if m != m:
        return "n/a"
    return f"{m:.{digits}g}" + (f" ± {se:.2g}" if se == se else "")


def _ci(m: float, lo: float, hi: float) -> str:
    """`m [lo, hi]` (95%); just `m` when the interval is undefined."""
    if m != m:
        return "n/a"
    return f"{m:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if lo == lo and hi == hi else "")


def versus(lo: float, hi: float, threshold: float) -> str:
    """An interval against a line: above → holds, below → does not hold, straddling (or undefined) → inconclusive."""
    if not (lo == lo and hi == hi and threshold == threshold):
        return UNSURE
    return HOLDS if lo > threshold else FAILS if hi < threshold else UNSURE


def diff_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) − mean(b) with a 95% Welch-style t interval (df = min(n) − 1, conservative); NaN bounds below 2 each."""
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    d = ma - mb
    if not (sa == sa and sb == sb):
        return d, math.nan, math.nan
    half = t975(min(len(a), len(b)) - 1) * math.sqrt(sa * sa + sb * sb)
    return d, d - half, d + half


def _items(cell: dict[str, Any] | None) -> list[float] | None:
    xs = (cell or {}).get("item_rewards")
    return list(xs) if xs else None


def path_barrier(p: dict[str, Any]) -> tuple[float, float, float, float, int] | None:
    """(λ*, mean, lower, upper, items) of a path's paired per-item barrier; None without per-item rewards."""
    rows = p.get("reward_items")
    if not rows or any(r is None for r in rows):
        return None
    lam, gaps = barrier_items(p["lambdas"], rows)
    m, lo, hi = mean_ci(gaps)
    return lam, m, lo, hi, len(gaps)


def _pairs_of(summary: dict[str, Any], left: set[str], right: set[str]) -> list[dict[str, Any]]:
    """LMC paths with one endpoint in `left` and the other in `right` (either order)."""
    return [p for p in ((summary.get("lmc") or {}).get("pairs") or [])
            if (p.get("a") in left and p.get("b") in right) or (p.get("b") in left and p.get("a") in right)]


# -- the claims -------------------------------------------------------------------------------
def findings(summary: dict[str, Any], methods: dict[str, str], base_reward: float | None) -> list[dict[str, Any]]:
    """Claims (1)–(13) with the measured number, its interval and a verdict computed from them by `CLAIM_RULES`."""
    es = [m for m, k in methods.items() if k == "es"]
    gr = [m for m, k in methods.items() if k == "grpo"]
    primary = summary.get("primary_task")
    out = []

    # the smallest effect that matters, shared by the reward and barrier rules
    cells = {m: (summary.get("rewards", {}).get(m, {}).get(primary) or {}) for m in es + gr}
    rw = {m: cells[m].get("reward_mean") for m in es + gr}
    trained = [r for r in rw.values() if r is not None]
    gain = max(trained) - base_reward if base_reward is not None and trained else math.nan
    thr = EFFECT * gain if gain == gain and gain > 0 else math.nan
    thr_txt = f"10% of the gain = {thr:.3g}" if thr == thr else "no base→best gain"
    enough = len(es) >= MIN_SEEDS and len(gr) >= MIN_SEEDS

    # (1) comparable held-out reward: paired per item, and across seeds; the wider interval counts
    d, lo, hi = diff_ci([rw[m] for m in es if rw[m] is not None], [rw[m] for m in gr if rw[m] is not None])
    items = {m: _items(cells[m]) for m in es + gr}
    if es and gr and all(items.values()) and len({len(x) for x in items.values() if x}) == 1:
        n = len(items[es[0]] or [])
        per_item = [statistics.fmean((items[m] or [])[i] for m in es) - statistics.fmean((items[m] or [])[i] for m in gr)
                    for i in range(n)]
        _, plo, phi = mean_ci(per_item)
        lo, hi = (min(lo, plo), max(hi, phi)) if lo == lo else (plo, phi)
        paired = f"paired over {n} items"
    else:
        paired = "no per-item rewards: seed-level interval only"
    if not enough or thr != thr or lo != lo:
        v = UNSURE
    else:
        v = HOLDS if -thr < lo and hi < thr else FAILS if lo > thr or hi < -thr else UNSURE
    base_txt = f"base {base_reward:.4g}" if base_reward is not None else "base n/a"
    out.append(_claim("comparable_reward", "ES and GRPO reach comparable held-out reward",
                      f"ES {_fmt(*mean_se([rw[m] for m in es]))} vs GRPO {_fmt(*mean_se([rw[m] for m in gr]))} "
                      f"({base_txt}); ES − GRPO {_ci(d, lo, hi)} ({paired}; {thr_txt}; "
                      f"{len(es)}+{len(gr)} seeds)", v))

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

    # (5) a barrier between ES and GRPO solutions, judged on paired per-item differences
    cross = [(p, path_barrier(p)) for p in _pairs_of(summary, set(es), set(gr))]
    out.append(_barrier_claim("barrier_between_solutions", "A loss barrier separates ES and GRPO solutions",
                              cross, thr, thr_txt))

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
            rates.setdefault(meth, {}).setdefault(k, []).append(val)
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
    out.append(_seeds_agree(summary, es, gr, enough))
    out.append(_unembedding(summary, gr))
    out.append(_path_shape(summary, es, gr, thr))
    out.append(_same_basin(summary, es, gr, cross, thr, thr_txt))
    out.append(_robustness(summary, es, gr, enough))
    out.append(_passk(summary.get("passk")))
    hy = [m for m, k in methods.items() if k == "grpo_es"]
    out.append(_sampler_or_update(summary, es, gr, hy, per_model, primary))
    return out


def _sampler_or_update(summary: dict[str, Any], es: list[str], gr: list[str], hy: list[str],
                       hacking: dict[str, float], primary: Any) -> dict[str, Any]:
    """(13) GRPO's update on ES's samples: does it land near ES (the sampler decides) or near GRPO (the update does)?"""
    key = "es_sampling_gradient_update"
    claim = "Sample with ES, optimise with gradients: ES's difference from GRPO comes from where it samples"
    if not hy:
        return _claim(key, claim, "not run: the study trained no grpo_es runs (add grpo_es to `methods`)", NOT_RUN)
    cells = summary.get("rewards") or {}
    kl = {p["model"]: p.get("off_task_kl") for p in summary.get("reward_kl") or []}
    measures = {
        "reward": {m: (cells.get(m, {}).get(primary) or {}).get("reward_mean") for m in es + gr + hy},
        "off-task KL": {m: kl.get(m) for m in es + gr + hy},
        "hacking": {m: hacking.get(m) for m in es + gr + hy},
    }
    parts, vs = [], []
    for name, x in measures.items():
        xe, xg, xh = ([x[m] for m in grp if x.get(m) is not None] for grp in (es, gr, hy))
        if not (xe and xg and xh):
            parts.append(f"{name}: n/a")
            continue
        d, lo, hi = diff_ci(xe, xg)
        me, mg = statistics.fmean(xe), statistics.fmean(xg)
        if not (lo == lo and (lo > 0 or hi < 0)):
            parts.append(f"{name}: ES {me:.3g} vs GRPO {mg:.3g} not separated (H {statistics.fmean(xh):.3g})")
            continue
        pm, plo, phi = mean_ci([(v - mg) / (me - mg) for v in xh])
        vs.append(versus(plo, phi, 0.5))
        parts.append(f"{name}: p {_ci(pm, plo, phi)} (ES {me:.3g}, GRPO {mg:.3g}, H {statistics.fmean(xh):.3g})")
    tot = (summary.get("update_norms") or {}).get("total") or {}
    ratio = [tot[h]["delta_norm"] / tot[g]["delta_norm"] for h in hy for g in gr
             if h in tot and g in tot and tot[g]["delta_norm"]]
    cos = summary.get("cosine") or {}
    labels, mat = cos.get("models", []), cos.get("total")

    def mean_cos(group: list[str]) -> float:
        vals = [mat[labels.index(h)][labels.index(o)] for h in hy for o in group
                if mat and h in labels and o in labels and mat[labels.index(h)][labels.index(o)] is not None]
        return statistics.fmean(vals) if vals else math.nan

    geo = (f"‖Δ_H‖/‖Δ_GRPO‖ {statistics.fmean(ratio):.3g}" if ratio else "‖Δ_H‖ n/a") + \
        f"; cos(Δ_H, Δ_ES) {mean_cos(es):.3g}, cos(Δ_H, Δ_GRPO) {mean_cos(gr):.3g}"
    enough = min(len(es), len(gr), len(hy)) >= MIN_SEEDS
    if not enough or not vs:
        v = UNSURE
    else:
        v = HOLDS if all(x == HOLDS for x in vs) else FAILS if all(x == FAILS for x in vs) else UNSURE
    return _claim(key, claim, f"{'; '.join(parts)}; {geo}; {len(es)}+{len(gr)}+{len(hy)} seeds (ES+GRPO+H)", v)


def _fmt_barrier(p: dict[str, Any], b: tuple[float, float, float, float, int] | None) -> str:
    name = p.get("name") or f"{p.get('a')}→{p.get('b')}"
    return f"{name}: n/a (no per-item rewards)" if b is None else f"{name}: {_ci(b[1], b[2], b[3])} at λ={b[0]:.2g}"


def _barrier_claim(key: str, claim: str, paths: list[tuple[dict[str, Any], Any]], thr: float, thr_txt: str) -> dict[str, Any]:
    """Every path's paired barrier interval against the effect line: all above → holds, all below → does not."""
    judged = [b for _, b in paths if b is not None]
    if not paths:
        return _claim(key, claim, "no interpolation path measured", UNSURE)
    if len(judged) < len(paths) or thr != thr:
        v = UNSURE
    else:
        vs = [versus(b[2], b[3], thr) for b in judged]
        v = HOLDS if all(x == HOLDS for x in vs) else FAILS if all(x == FAILS for x in vs) else UNSURE
    n = judged[0][4] if judged else 0
    return _claim(key, claim, f"paired barrier [95%] {'; '.join(_fmt_barrier(p, b) for p, b in paths)} "
                  f"({n} items; {thr_txt})", v)


def _layer_cos(summary: dict[str, Any], group: list[str]) -> dict[str, list[float]]:
    """Per transformer layer (and `lm_head`), the cosines of every seed pair within `group`."""
    cos = summary.get("cosine") or {}
    labels = cos.get("models", [])
    idx = [labels.index(m) for m in group if m in labels]
    pairs = [(i, j) for k, i in enumerate(idx) for j in idx[k + 1:]]
    out: dict[str, list[float]] = {}
    mats = dict(cos.get("layers") or {})
    modules = cos.get("modules") or {}
    head = modules.get("lm_head") or modules.get("embeddings")  # tied: the unembedding is the embedding
    if head is not None:
        mats["lm_head"] = head
    for layer, mat in mats.items():
        vals = [mat[i][j] for i, j in pairs if mat[i][j] is not None and math.isfinite(mat[i][j])]
        if vals:
            out[layer] = vals
    return out


def _seeds_agree(summary: dict[str, Any], es: list[str], gr: list[str], enough: bool) -> dict[str, Any]:
    """(7) ES seeds' updates agree more than GRPO seeds', per layer, except at the unembedding."""
    ce, cg = _layer_cos(summary, es), _layer_cos(summary, gr)
    layers = [k for k in ce if k in cg and k != "lm_head"]
    claim = "ES runs agree with each other more than GRPO runs do, per layer, except at the unembedding"
    if not layers:
        return _claim("es_seeds_agree_more", claim, "no within-method update cosines", UNSURE)
    diffs = [statistics.fmean(ce[k]) - statistics.fmean(cg[k]) for k in layers]
    m, lo, hi = mean_ci(diffs)
    ue = statistics.fmean(ce["lm_head"]) if "lm_head" in ce else math.nan
    ug = statistics.fmean(cg["lm_head"]) if "lm_head" in cg else math.nan
    exception = ue <= ug if ue == ue and ug == ug else None
    layer_v = versus(lo, hi, 0.0)
    if not enough or exception is None:
        v = UNSURE
    elif layer_v == FAILS or (layer_v == HOLDS and not exception):
        v = FAILS
    else:
        v = HOLDS if layer_v == HOLDS else UNSURE
    wins = sum(d > 0 for d in diffs)
    return _claim("es_seeds_agree_more", claim,
                  f"mean over {len(layers)} layers of cos_ES − cos_GRPO {_ci(m, lo, hi)} (ES higher in {wins}); "
                  f"unembedding ES {ue:.3g} vs GRPO {ug:.3g}; {len(es)}+{len(gr)} seeds", v)


def _unembedding(summary: dict[str, Any], gr: list[str]) -> dict[str, Any]:
    """(8) GRPO's unembedding changes correlate across runs far more than its other layers'."""
    claim = "GRPO's unembedding changes correlate across runs far more (~4×) than its other layers'"
    cg = _layer_cos(summary, gr)
    layers = [k for k in cg if k != "lm_head"]
    if "lm_head" not in cg or not layers:
        return _claim("grpo_unembedding_correlates", claim, "no GRPO within-method update cosines", UNSURE)
    u = cg["lm_head"]
    o = [statistics.fmean(cg[k][p] for k in layers) for p in range(len(u))]  # per seed pair, over layers
    m, lo, hi = mean_ci([a - 2 * b for a, b in zip(u, o, strict=True)])
    mu, mo = statistics.fmean(u), statistics.fmean(o)
    ratio = mu / mo if mo > 0 else math.inf if mu > 0 else math.nan
    v = versus(lo, hi, 0.0) if len(gr) >= MIN_SEEDS else UNSURE
    if v == HOLDS and mu <= 0.1:
        v = UNSURE
    return _claim("grpo_unembedding_correlates", claim,
                  f"unembedding cos {mu:.3g} vs other layers {mo:.3g} (ratio {ratio:.3g}); u − 2·o {_ci(m, lo, hi)} "
                  f"over {len(u)} seed pairs", v)


def _half_way(p: dict[str, Any]) -> tuple[float, float]:
    """(gain R(1) − R(0), fraction of it reached at the λ nearest ½) of one path."""
    lams, r = p["lambdas"], p["reward"]
    k = min(range(len(lams)), key=lambda i: abs(lams[i] - 0.5))
    g = r[-1] - r[0]
    return g, ((r[k] - r[0]) / g if g else math.nan)


def _path_shape(summary: dict[str, Any], es: list[str], gr: list[str], thr: float) -> dict[str, Any]:
    """(9) base→ES rises smoothly, base→GRPO stays flat then rises near the end."""
    claim = "base→ES reward rises smoothly along the path; base→GRPO stays flat, then rises sharply near the end"
    f: dict[str, list[float]] = {"es": [], "grpo": []}
    for meth, group in (("es", es), ("grpo", gr)):
        for p in _pairs_of(summary, {BASE_LABEL}, set(group)):
            if p.get("a") != BASE_LABEL:
                continue
            g, frac = _half_way(p)
            if thr == thr and g > thr:
                f[meth].append(frac)
    d, lo, hi = diff_ci(f["es"], f["grpo"])
    ok = len(f["es"]) >= MIN_SEEDS and len(f["grpo"]) >= MIN_SEEDS
    v = versus(lo, hi, 0.2) if ok else UNSURE
    why = "" if ok else f" (needs ≥ {MIN_SEEDS} base→model paths per method that gained > 10% of the best gain)"
    return _claim("path_shape", claim,
                  f"half-way fraction f: ES {_fmt(*mean_se(f['es']))} vs GRPO {_fmt(*mean_se(f['grpo']))}; "
                  f"f_ES − f_GRPO {_ci(d, lo, hi)}; {len(f['es'])}+{len(f['grpo'])} paths{why}", v)


def _same_basin(summary: dict[str, Any], es: list[str], gr: list[str], cross: list[tuple[dict[str, Any], Any]],
                thr: float, thr_txt: str) -> dict[str, Any]:
    """(10) ES↔ES and GRPO↔GRPO paths are flat, ES↔GRPO paths are not."""
    claim = "ES↔ES and GRPO↔GRPO paths are flat (same basin), unlike ES↔GRPO"
    same = [(p, path_barrier(p)) for grp in (es, gr) for p in _pairs_of(summary, set(grp), set(grp))]
    if not same or not cross:
        return _claim("same_basin", claim, "needs within- and across-method interpolation paths", UNSURE)
    if any(b is None for _, b in same + cross) or thr != thr:
        v = UNSURE
    else:
        vs = [versus(b[2], b[3], thr) for _, b in same]
        vc = [versus(b[2], b[3], thr) for _, b in cross]
        if any(x == HOLDS for x in vs) or all(x == FAILS for x in vc):
            v = FAILS
        else:
            v = HOLDS if all(x == FAILS for x in vs) and any(x == HOLDS for x in vc) else UNSURE
    worst = max((b for _, b in same if b is not None), key=lambda b: b[1], default=None)
    return _claim("same_basin", claim,
                  f"{len(same)} same-method paths, largest paired barrier "
                  f"{_ci(worst[1], worst[2], worst[3]) if worst else 'n/a'}; {len(cross)} ES↔GRPO paths ({thr_txt})", v)


def _robustness(summary: dict[str, Any], es: list[str], gr: list[str], enough: bool) -> dict[str, Any]:
    """(11) GRPO degrades less under small weight noise; ES can gain under larger noise."""
    claim = "GRPO checkpoints are more robust to small weight perturbations than ES's; ES can improve under larger ones"
    rob = summary.get("robustness") or {}
    curves = {m: sorted((c for c in rob[m].get("curves", []) if c.get("sigma", 0) > 0), key=lambda c: c["sigma"])
              for m in es + gr if m in rob}
    if not curves or not all(curves.values()):
        return _claim("grpo_more_robust", claim, "no robustness curves", UNSURE)
    deg = {m: c[0]["degradation_mean"] for m, c in curves.items()}
    small = min(c[0]["sigma"] for c in curves.values())
    d, lo, hi = diff_ci([deg[m] for m in es if m in deg], [deg[m] for m in gr if m in deg])
    best_gain: list[tuple[float, float, float, float]] = []  # (σ, mean, lo, hi) of ES's best-trial gain per larger σ
    sigmas = sorted({c["sigma"] for m in es if m in curves for c in curves[m][1:]})
    for sg in sigmas:
        gains = [max(c["reward"]) - rob[m]["baseline"]["reward"] for m in es if m in curves
                 for c in curves[m] if c["sigma"] == sg and c.get("reward")]
        best_gain.append((sg, *mean_ci(gains)))
    part_a = versus(lo, hi, 0.0)
    part_b = any(versus(g[2], g[3], 0.0) == HOLDS for g in best_gain)
    if not enough:
        v = UNSURE
    else:
        v = FAILS if part_a == FAILS else HOLDS if part_a == HOLDS and part_b else UNSURE
    top = max(best_gain, key=lambda g: g[1], default=None)
    return _claim("grpo_more_robust", claim,
                  f"degradation at σ={small:g}: ES − GRPO {_ci(d, lo, hi)}; ES best-trial gain "
                  + (f"at σ={top[0]:g} {_ci(*top[1:])}" if top else "n/a (no larger σ)")
                  + f"; {len(es)}+{len(gr)} seeds", v)


def _passk(res: dict[str, Any] | None) -> dict[str, Any]:
    """(12) temperature sampling beats weight-perturbation sampling at every k (paired per prompt)."""
    claim = "Temperature sampling beats weight-perturbation sampling at every k (pass@k, base model)"
    if not res:
        return _claim("temperature_beats_perturbation", claim,
                      "not measured: set analysis.passk_n > 0 to run it", UNSURE)
    n = int(res["n"])
    ct, cp = res["temperature"]["counts"], res["perturbation"]["counts"]
    if len(ct) != len(cp):
        return _claim("temperature_beats_perturbation", claim, "temperature and perturbation prompts differ", UNSURE)
    ks = sorted({*(2**i for i in range(n.bit_length()) if 2**i <= n), n})
    rows = []
    for k in ks:
        rows.append((k, *mean_ci([pass_at_k(n, a, k) - pass_at_k(n, b, k) for a, b in zip(ct, cp, strict=True)])))
    vs = [versus(r[2], r[3], 0.0) for r in rows]
    if not any(ct) and not any(cp):
        v, why = UNSURE, " (nothing solved by either: the model cannot support the claim at this scale)"
    else:
        v, why = (HOLDS if all(x == HOLDS for x in vs) else FAILS if FAILS in vs else UNSURE), ""
    t, p = res["temperature"], res["perturbation"]
    return _claim("temperature_beats_perturbation", claim,
                  f"pass@{n} T={t['value']:g} {t[f'pass@{n}']:.3g} vs σ={p['value']:g} {p[f'pass@{n}']:.3g}; "
                  f"temperature − perturbation " + ", ".join(f"k={r[0]}: {_ci(*r[1:])}" for r in rows)
                  + f" over {len(ct)} prompts{why}", v)


def _claim(key: str, claim: str, measured: str, verdict: str) -> dict[str, Any]:
    return {"key": key, "claim": claim, "measured": measured, "verdict": verdict, "rule": CLAIM_RULES[key]}
