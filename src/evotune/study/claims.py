"""The seed papers' claims, each with a stated rule; verdicts are computed from the evidence file alone.

`findings(evidence)` is a pure function of `evidence.json` (see `study/evidence.py`): no torch, no
model, so `evotune study --rejudge` recomputes every verdict in seconds. Statistics come from
`evotune.stats` (Student-t with exact quantiles, Welch, Fieller, jackknife over seeds, exact
permutation tests, Bonferroni); every interval is printed with its kind.

Two checks come before the claims, because a claim about how ES's solution differs means nothing
if ES learned nothing:
- L: every ES seed's held-out gain over the base is resolved (paired per item), and ES beats the
  null ES (`es_null`: the same ES with each iteration's fitness permuted) on reward, paired by seed
  (an ES run and its null share the seed's noise draws).
- S: the part of ES's change shared across seeds (signal) next to the part that is not (diffusion),
  in weight space (against the closed-form noise floor) and in behaviour (per-item reward changes),
  compared with the null's by an exact permutation test that swaps runs within a seed's pair.

Every claim about ES's solution (2, 3, 4, 6, 7, 11) is also judged with the null runs in ES's place:
a "holds" the null gets too is reported as "not informative", never as support; a "does not hold"
stays, with the null's verdict beside it (a refutation is not weakened by the null sharing it).

Multiplicity: a verdict that needs *every* one of several tests (an intersection–union test) needs no
correction; one that needs *some* one of them is Bonferroni-corrected over that family.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from evotune.stats import (
    FAILS,
    HOLDS,
    NOT_INFORMATIVE,
    NOT_RUN,
    NOT_TESTABLE,
    UNDERPOWERED,
    UNSURE,
    Interval,
    Reading,
    barrier_at,
    combine,
    diff_interval,
    fieller_position,
    jackknife_pair_mean,
    mean_std,
    paired_interval,
    paired_permutation_p,
    pass_at_k,
    permutation_p,
    read,
    read_equivalence,
    shared_fraction,
    t_interval,
    welch_interval,
)

BASE = "base"
MIN_SEEDS = 3  # fewer seeds per method: a seed-level interval is too wide to read (verdict: underpowered)
ALPHA = 0.05

DEFAULT_MARGINS = {"reward": 5.0, "accuracy": 0.05, "barrier": 5.0, "kl": 0.01, "hacking": 0.05, "cosine": 0.05,
                   "fraction": 0.15, "degradation": 2.0, "position": 0.25, "passk": 0.05}

CLAIM_RULES = {
    "es_learned": "each ES seed's held-out reward minus the base's, paired per item (95% t, df = items − 1, Bonferroni "
    "over seeds: needed for 'some seed', conservative for 'every seed'): holds if every seed's interval lies above 0 "
    "and ES − null ES on reward (paired by seed when the seeds match, else Welch) lies above 0; does not hold if some "
    "seed's interval lies wholly below margins.reward (no gain that matters)",
    "shared_signal": "behaviour: per-item reward change vectors u = r_model − r_base; shared fraction φ = mean over seed "
    "pairs ⟨u_i, u_j⟩ / mean ‖u_i‖². ES's φ minus the null's, exact permutation test (one-sided, α = 0.05) over the "
    "2^n swaps within each seed's ES/null pair (they share noise draws; all splits of the runs when seeds do not "
    "pair): holds if p ≤ 0.05, underpowered if no arrangement can reach it. Weight space reported beside it: φ_w = mean ⟨Δ_i, Δ_j⟩ / mean ‖Δ_i‖² against the noise floor "
    "1/√d and the closed-form bound N·T/d",
    "es_beats_selection": "held-out reward of ES minus RandOpt (the best of N·T perturbations of the base, scored on "
    "the same training completions as ES, no update), Welch 95% t over seeds, read against 0 with margins.reward; "
    "shown only when the study trains randopt",
    "comparable_accuracy": "ES − GRPO held-out accuracy, Welch 95% t interval over seeds; holds if it lies inside "
    "±margins.accuracy, does not hold if wholly outside; underpowered if its half-width exceeds the margin (then it "
    "could never fit), else inconclusive",
    "comparable_reward": "as comparable_accuracy, on held-out reward with ±margins.reward (a margin fixed in the study "
    "config before the run, not derived from any run)",
    "orthogonal_updates": "per ES–GRPO seed pair, the largest |cos(Δ_ES, Δ_GRPO)| over layers; holds if every pair's is "
    "< 0.1; does not hold if the median layer's mean |cos| > 0.3; the same rule with null-ES runs in ES's place: if "
    "they get the same verdict it is not informative",
    "es_moves_further": "‖Δ_ES‖/‖Δ_GRPO‖ per seed pair; holds if every ratio > 2, does not hold if every ratio ≤ 1; "
    "reported beside ‖Δ_ES‖/‖Δ_null‖ (Welch interval on log norms) and the closed form α√(T·d/N); not informative if "
    "the null gets the same verdict",
    "es_drifts_more_off_task": "off-task KL(model ‖ base) per token, ES − GRPO, Welch 95% t over seeds, read against 0 "
    "with margins.kl; ES − null ES beside it (how much of ES's drift is diffusion); not informative if the null gets "
    "the same verdict",
    "barrier_between_solutions": "per ES↔GRPO pair and interior λ, the paired per-item barrier (1−λ)R_A + λR_B − R_λ "
    "with a t interval over items; a pair has a barrier if at some λ its interval (Bonferroni over the pair's λ) lies "
    "above margins.barrier, none if at every λ its interval (uncorrected: every λ must agree) lies below; holds if "
    "every pair has one, does not hold if none has (both 'every pair' rules: no correction over pairs); else "
    "underpowered (an interval reaching past the margin on both sides) or inconclusive",
    "es_hacks_less": "hacking rate on the trained task = the largest detector rate above the base's; GRPO − ES, Welch "
    "95% t over seeds, read against 0 with margins.hacking; not informative if GRPO − null ES gets the same verdict; "
    "each method's reward gain shown beside it (rates compare runs at their own progress); off-task degradation "
    "reported apart (or 'not measurable' when every model, the base included, scores the same on every item)",
    "es_seeds_agree_more": "per seed pair, the mean over transformer layers of cos(Δ_i, Δ_j); ES's mean pair cosine "
    "minus GRPO's, 95% t interval with jackknife-over-seeds standard errors (pairs share seeds); holds if above 0 "
    "(margins.cosine) and at the unembedding ES's mean is not above GRPO's; does not hold if below 0 or the exception "
    "is absent; not informative if the null gets the same verdict",
    "grpo_unembedding_correlates": "per GRPO seed pair, u = cos at the unembedding and o = mean cos over transformer "
    "layers; u − 2·o with a jackknife-over-seeds 95% t interval; holds if above 0 and mean u > 0.1, does not hold if "
    "below 0",
    "path_shape": "f = (R(½) − R(0)) / (R(1) − R(0)) on each base→model path whose gain exceeds margins.reward; two "
    "halves, each a 95% t interval over seeds read against 0.25 with margins.fraction: ES above (rises smoothly) and "
    "GRPO below (flat, then a jump); holds if both hold, does not hold if either does not",
    "same_basin": "paired barriers as in barrier_between_solutions; holds if every ES↔ES and GRPO↔GRPO pair has none "
    "(uncorrected) and some ES↔GRPO pair has one (Bonferroni over ES↔GRPO pairs × λ); does not hold if some "
    "same-method pair has one (Bonferroni over same-method pairs × λ) or every ES↔GRPO pair has none",
    "grpo_more_robust": "degradation = unperturbed − mean over ≥ 8 trials of the perturbed reward at the smallest σ; "
    "ES − GRPO, Welch 95% t over seeds, read against 0 with margins.degradation; and ES's mean gain over trials at a "
    "larger σ (not the best trial: biased), t over seeds, above 0; holds if both hold; not informative if the null "
    "gets the same verdict",
    "temperature_beats_perturbation": "pass@k of temperature vs weight-perturbation sampling (each at its best "
    "setting chosen on train prompts; each prompt has its own n samples and its own n perturbed models, so prompts "
    "are independent), paired per prompt, Bonferroni over the k values; holds if above 0 at every k, "
    "does not hold if below 0 at some k; not testable when nothing is solved at the largest k",
    "es_sampling_gradient_update": "H = GRPO's update on ES-perturbed members' completions. On each measure where ES "
    "and GRPO differ (Welch interval of ES − GRPO excludes 0: reward, off-task KL, hacking), H's position "
    "p = (μ_H − μ_GRPO)/(μ_ES − μ_GRPO) with Fieller's 95% interval (all three groups' uncertainty); holds if every "
    "such interval lies above 0.5, does not hold if every one lies below 0.5 (margins.position)",
}

TITLES = {
    "es_learned": "L. ES learned the task (a check before the claims)",
    "shared_signal": "S. ES's change is shared across seeds beyond what a null ES shows (signal vs diffusion)",
    "es_beats_selection": "R. ES learned more than selection alone (RandOpt at the same training completions)",
    "comparable_accuracy": "1a. ES and GRPO reach comparable held-out accuracy",
    "comparable_reward": "1b. ES and GRPO reach comparable held-out reward",
    "orthogonal_updates": "2. ES and GRPO updates are nearly orthogonal at every layer",
    "es_moves_further": "3. ES moves the weights much further than GRPO",
    "es_drifts_more_off_task": "4. ES drifts more off-task (per-token KL to the base)",
    "barrier_between_solutions": "5. A loss barrier separates ES and GRPO solutions",
    "es_hacks_less": "6. ES hacks the reward less than GRPO",
    "es_seeds_agree_more": "7. ES runs agree with each other more than GRPO runs do, per layer, except at the unembedding",
    "grpo_unembedding_correlates": "8. GRPO's unembedding changes correlate across runs far more (~4×) than its other layers'",
    "path_shape": "9. base→ES reward rises smoothly; base→GRPO stays flat, then rises sharply near the end",
    "same_basin": "10. ES↔ES and GRPO↔GRPO paths are flat (same basin), unlike ES↔GRPO",
    "grpo_more_robust": "11. GRPO is more robust to small weight noise; ES can improve under larger noise",
    "temperature_beats_perturbation": "12. Temperature sampling beats weight-perturbation sampling at every k",
    "es_sampling_gradient_update": "13. ES's difference from GRPO comes from where it samples (grpo_es)",
}


class Evidence:
    """Typed access to an evidence dict: models by method (sorted by seed), rewards, geometry."""

    def __init__(self, ev: dict[str, Any]) -> None:
        self.ev = ev
        self.primary = ev.get("primary_task")
        self.margins = {**DEFAULT_MARGINS, **((ev.get("study") or {}).get("margins") or {})}
        models = ev.get("models") or {}
        self.by_method: dict[str, list[str]] = {}
        for label, m in sorted(models.items(), key=lambda kv: (kv[1].get("seed") is None, kv[1].get("seed") or 0)):
            self.by_method.setdefault(m.get("method") or "", []).append(label)
        self.models = models

    def group(self, method: str) -> list[str]:
        return list(self.by_method.get(method, []))

    def items(self, label: str, task: str | None = None, key: str = "reward") -> list[float] | None:
        cell = ((self.ev.get("rewards") or {}).get(label) or {}).get(task or self.primary) or {}
        xs = cell.get(key)
        return None if xs is None else [float(x) for x in xs]

    def mean(self, label: str, task: str | None = None, key: str = "reward") -> float | None:
        xs = self.items(label, task, key)
        return statistics.fmean(xs) if xs else None

    # -- geometry ---------------------------------------------------------------------------------
    def geo(self) -> dict[str, Any] | None:
        return self.ev.get("geometry")

    def norm(self, label: str, group: str = "total", name: str | None = None) -> float | None:
        g = self.geo()
        if not g or label not in g["models"]:
            return None
        block = g["total"] if group == "total" else g[group].get(name or "")
        return None if block is None else block["norm"][g["models"].index(label)]

    def cos(self, a: str, b: str, group: str = "total", name: str | None = None) -> float | None:
        g = self.geo()
        if not g or a not in g["models"] or b not in g["models"]:
            return None
        block = g["total"] if group == "total" else g[group].get(name or "")
        if block is None or block.get("cos") is None:
            return None
        v = block["cos"][g["models"].index(a)][g["models"].index(b)]
        return None if v is None else float(v)

    def layers(self) -> list[str]:
        g = self.geo()
        return sorted((g or {}).get("layers", {}), key=lambda k: (len(k), k))

    def head(self) -> str | None:
        """The unembedding's module key (lm_head; the embedding when the head is tied)."""
        mods = (self.geo() or {}).get("modules", {})
        return "lm_head" if "lm_head" in mods else ("embeddings" if "embeddings" in mods else None)

    def numel(self) -> int | None:
        g = self.geo()
        return (g or {}).get("total", {}).get("numel")


# -- helpers ------------------------------------------------------------------------------------
def _row(key: str, measured: str, verdict: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "claim": TITLES[key], "measured": measured, "verdict": verdict, "rule": CLAIM_RULES[key],
            **extra}


def _v(r: Reading, unit: str) -> tuple[str, str]:
    note = r.note(unit)
    return r.verdict, (f"; {note}" if note else "")


def _pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}g}"


def _seeds_ok(*groups: Sequence[str]) -> bool:
    return all(len(g) >= MIN_SEEDS for g in groups)


def _same_seeds(E: Evidence, a: Sequence[str], b: Sequence[str]) -> bool:
    """Runs of two methods pair by seed (an ES run and its null share that seed's noise draws)."""
    sa, sb = ([E.models[m].get("seed") for m in g] for g in (a, b))
    return len(a) == len(b) > 0 and None not in sa and sa == sb


def _null_check(verdict: str, null_verdict: str | None, what: str) -> tuple[str, str]:
    """A "holds" the null ES gets too is not evidence about learning: report it as not informative.

    A "does not hold" stays: the claim is false of ES's models whatever the null does; the note says so.
    """
    if null_verdict is None:
        return verdict, "; no null-ES runs to check against"
    if verdict == HOLDS and null_verdict == HOLDS:
        return NOT_INFORMATIVE, f"; a null ES gets the same verdict ({what}: {null_verdict}), so it says nothing about learning"
    if verdict == FAILS and null_verdict == FAILS:
        return FAILS, f"; a null ES does not hold either ({what}): whatever separates them is not learning"
    return verdict, f"; null ES in ES's place: {null_verdict}"


# -- the checks and claims ----------------------------------------------------------------------
def findings(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks L and S, then claims 1a–13, each with its measured numbers (intervals with their kind) and verdict."""
    E = Evidence(evidence)
    es, gr, nu, hy = E.group("es"), E.group("grpo"), E.group("es_null"), E.group("grpo_es")
    rows = [
        _learned(E, es, nu),
        _shared(E, es, nu),
        *([_selection(E, es, E.group("randopt"))] if E.group("randopt") else []),
        _comparable(E, es, gr, "correct", "comparable_accuracy", "accuracy"),
        _comparable(E, es, gr, "reward", "comparable_reward", "reward"),
        _orthogonal(E, es, gr, nu),
        _further(E, es, gr, nu),
        _drift(E, es, gr, nu),
    ]
    cross = [(a, b) for a in es for b in gr]
    same = _pairs(es) + _pairs(gr)
    rows.append(_barrier_claim(E, cross, same))
    rows.append(_hacking(E, es, gr, nu))
    rows.append(_seeds_agree(E, es, gr, nu))
    rows.append(_unembedding(E, gr))
    rows.append(_path_shape(E, es, gr))
    rows.append(_same_basin(E, cross, same))
    rows.append(_robustness(E, es, gr, nu))
    rows.append(_passk(E))
    rows.append(_sampler(E, es, gr, hy))
    return rows


def _learned(E: Evidence, es: list[str], nu: list[str]) -> dict[str, Any]:
    base = E.items(BASE)
    if not es or base is None:
        return _row("es_learned", "no ES runs or no base evaluation", NOT_RUN)
    parts, reads = [], []
    for m in es:
        xs = E.items(m)
        if xs is None or len(xs) != len(base):
            parts.append(f"{m}: n/a")
            reads.append(UNSURE)
            continue
        iv = paired_interval(xs, base, correction=len(es))  # 'some seed below' needs it; 'every seed above' does not
        mr = E.margins["reward"]
        # learned: above 0; learned nothing that matters: wholly below the reward margin
        reads.append(HOLDS if iv.lo > 0 else FAILS if iv.hi < mr else
                     UNDERPOWERED if iv.half > mr else UNSURE)
        parts.append(f"{m} {iv.text()}")
    txt = "gain over the base, paired per item: " + "; ".join(parts)
    vs_null = None
    if nu:
        xe, xn = [E.mean(m) for m in es], [E.mean(m) for m in nu]
        paired = _same_seeds(E, es, nu) and None not in xe + xn
        iv = paired_interval(xe, xn, unit="seed pairs") if paired else welch_interval(xe, xn)  # type: ignore[arg-type]
        vs_null = read(iv, 0.0, E.margins["reward"])
        null_gain = [f"{m} {paired_interval(E.items(m) or [], base, correction=len(nu)).text()}"
                     for m in nu if E.items(m)]
        txt += (f"; null ES gains (same correction): {'; '.join(null_gain)}; ES − null ES reward"
                f"{' (paired by seed: shared noise draws)' if paired else ''} {iv.text()}")
    v = FAILS if FAILS in reads else HOLDS if all(r == HOLDS for r in reads) else UNSURE
    if v == HOLDS and vs_null is not None and vs_null.verdict != HOLDS:
        v = vs_null.verdict if vs_null.verdict in (UNDERPOWERED, FAILS) else UNSURE
        note = vs_null.note("seeds")
        txt += f"; {note}" if note else ""
    return _row("es_learned", txt, v)


def _selection(E: Evidence, es: list[str], ro: list[str]) -> dict[str, Any]:
    """Does ES's update beat keeping the best random perturbation (Gan & Isola's RandOpt) at equal completions?"""
    xe = [x for x in (E.mean(m) for m in es) if x is not None]
    xr = [x for x in (E.mean(m) for m in ro) if x is not None]
    if not xe or not xr:
        return _row("es_beats_selection", "no held-out rewards for ES and RandOpt runs", NOT_RUN)
    iv = welch_interval(xe, xr)
    verdict, note = _v(read(iv, 0.0, E.margins["reward"]), "seeds per method")
    txt = (f"held-out reward ES {statistics.fmean(xe):.3g} vs RandOpt (best member) {statistics.fmean(xr):.3g}; "
           f"ES − RandOpt {iv.text()}; margin {E.margins['reward']:g} (pre-registered){note}")
    return _row("es_beats_selection", txt, verdict)


def _weight_shared(E: Evidence, labels: list[str]) -> float:
    """φ_w from norms and cosines: mean ⟨Δ_i, Δ_j⟩ / mean ‖Δ_i‖² over the whole model."""
    norms = [E.norm(m) for m in labels]
    if any(n is None for n in norms) or len(labels) < 2:
        return math.nan
    dots = [E.cos(a, b) * E.norm(a) * E.norm(b) for a, b in _pairs(labels)]  # type: ignore[operator]
    return statistics.fmean(dots) / statistics.fmean(n * n for n in norms)  # type: ignore[operator]


def _shared(E: Evidence, es: list[str], nu: list[str]) -> dict[str, Any]:
    base = E.items(BASE)
    if len(es) < 2 or base is None:
        return _row("shared_signal", "needs ≥ 2 ES seeds and the base evaluation", NOT_RUN)
    change = {m: [x - b for x, b in zip(E.items(m) or [], base, strict=False)] for m in es + nu}
    phi_es = shared_fraction([change[m] for m in es])
    txt = f"behaviour (per-item reward change, {len(base)} items): φ_ES {_fmt(phi_es)}"
    v = UNSURE
    if len(nu) >= 2:
        phi_nu = shared_fraction([change[m] for m in nu])

        def stat(a: list[str], b: list[str]) -> float:
            return shared_fraction([change[m] for m in a]) - shared_fraction([change[m] for m in b])

        txt += f" vs φ_null {_fmt(phi_nu)}"
        if _same_seeds(E, es, nu):  # swaps within a seed's pair: the only relabellings the design allows
            test, what = paired_permutation_p, "arrangements swapping ES and null within each seed"
            need = math.ceil(math.log2(1 / ALPHA))
            loose, all_splits = permutation_p(es, nu, stat)
            aside = f"; all {all_splits} splits, as if the runs were exchangeable: p = {loose:.3g} (not the test)"
        else:
            test, what, need, aside = permutation_p, f"splits of {len(es)}+{len(nu)} models", None, ""
        p, splits = test(es, nu, stat)
        txt += f"; permutation p = {p:.3g} (exact, one-sided, {splits} {what}; smallest attainable {1 / splits:.3g})"
        txt += aside
        if p <= ALPHA:
            v = HOLDS
        elif 1 / splits > ALPHA:
            v = UNDERPOWERED
            txt += f"; underpowered: {len(es)}+{len(nu)} models cannot reach p ≤ {ALPHA}" + \
                (f" ({need} seeds per method can)" if need else "")
        else:
            p_less, _ = test(es, nu, stat, "less")
            v = FAILS if p_less <= ALPHA else UNSURE
    else:
        txt += "; no null-ES runs to compare with"
    # weight space: signal vs diffusion, against the closed form
    d = E.numel()
    w_es = _weight_shared(E, es)
    if d and w_es == w_es:
        info = next((E.models[m].get("es") for m in es if E.models[m].get("es")), None) or {}
        n_pop, t_upd = info.get("population"), info.get("updates")
        bound = (n_pop * t_upd / d) if n_pop and t_upd else math.nan
        w_nu = _weight_shared(E, nu) if len(nu) >= 2 else math.nan
        norm = statistics.fmean(E.norm(m) for m in es)  # type: ignore[misc]
        shared = math.sqrt(max(w_es, 0.0)) * norm
        txt += (f". Weight space: φ_w ES {w_es:.2e} vs null {w_nu:.2e}; noise floor 1/√d = {1 / math.sqrt(d):.2e} "
                f"(d = {d:,}); a perfectly informative ES reaches at most N·T/d = {bound:.1e}: seed-shared ‖Δ‖ ≈ "
                f"{shared:.3g} of ‖Δ_ES‖ {norm:.3g} (diffusion ≈ {math.sqrt(max(0.0, 1 - max(w_es, 0.0))) * norm:.3g})"
                + (f"; φ_w ES within 3/√d = {3 / math.sqrt(d):.2e}: not resolvable in weight space at this budget"
                   if abs(w_es) < 3 / math.sqrt(d) else ""))
    return _row("shared_signal", txt, v)


def _comparable(E: Evidence, es: list[str], gr: list[str], key: str, claim: str, margin_key: str) -> dict[str, Any]:
    xe = [E.mean(m, key=key) for m in es]
    xg = [E.mean(m, key=key) for m in gr]
    if not es or not gr or any(x is None for x in xe + xg):
        return _row(claim, f"no per-item {key} for every ES and GRPO run", NOT_RUN)
    iv = welch_interval(xe, xg)
    mg = E.margins[margin_key]
    r = read_equivalence(iv, mg)
    v, note = _v(r, "seeds per method")
    base = E.mean(BASE, key=key)
    me, se_ = mean_std([x for x in xe if x is not None])
    mgr, sg = mean_std([x for x in xg if x is not None])
    txt = (f"ES {me:.3g} (sd {se_:.2g}) vs GRPO {mgr:.3g} (sd {sg:.2g}), base {_fmt(base)}; ES − GRPO {iv.text()}; "
           f"margin ±{mg:g} (pre-registered){note}")
    return _row(claim, txt, v)


def _max_abs_cos(E: Evidence, a: str, b: str) -> float | None:
    vals = [E.cos(a, b, "layers", k) for k in E.layers()]
    vals = [abs(x) for x in vals if x is not None]
    return max(vals) if vals else None


def _orthogonal_verdict(E: Evidence, xs: list[str], gr: list[str]) -> tuple[str, str]:
    pair_max = [_max_abs_cos(E, a, b) for a in xs for b in gr]
    if not pair_max or any(x is None for x in pair_max):
        return UNSURE, "no update-geometry data"
    per_layer = []
    for k in E.layers():
        vals = [abs(E.cos(a, b, "layers", k) or 0.0) for a in xs for b in gr]
        per_layer.append(statistics.fmean(vals))
    med = statistics.median(per_layer)
    worst = max(pair_max)  # type: ignore[type-var]
    v = HOLDS if worst < 0.1 else FAILS if med > 0.3 else UNSURE
    return v, f"largest layer |cos| over {len(pair_max)} pairs {worst:.2g}, median layer mean |cos| {med:.2g}"


def _orthogonal(E: Evidence, es: list[str], gr: list[str], nu: list[str]) -> dict[str, Any]:
    if not es or not gr:
        return _row("orthogonal_updates", "needs ES and GRPO runs", NOT_RUN)
    v, txt = _orthogonal_verdict(E, es, gr)
    floor = ""
    g = E.geo()
    if g and E.layers():
        sizes = [g["layers"][k]["numel"] for k in E.layers() if g["layers"][k].get("numel")]
        if sizes:
            floor = f"; random-direction floor E|cos| ≈ √(2/(π·d_layer)) = {math.sqrt(2 / (math.pi * statistics.median(sizes))):.1e}"
    nv = None
    if nu:
        nv, ntxt = _orthogonal_verdict(E, nu, gr)
        txt += f"; null ES vs GRPO: {ntxt}"
    v, note = _null_check(v, nv, "null ES vs GRPO")
    return _row("orthogonal_updates", f"ES vs GRPO: {txt}{floor}{note}", v)


def _further_verdict(E: Evidence, xs: list[str], gr: list[str]) -> tuple[str, list[float]]:
    ratios = [E.norm(a) / E.norm(b) for a in xs for b in gr if E.norm(a) and E.norm(b)]  # type: ignore[operator]
    if not ratios:
        return UNSURE, []
    return (HOLDS if min(ratios) > 2 else FAILS if max(ratios) <= 1 else UNSURE), ratios


def _further(E: Evidence, es: list[str], gr: list[str], nu: list[str]) -> dict[str, Any]:
    v, ratios = _further_verdict(E, es, gr)
    if not ratios:
        return _row("es_moves_further", "no update norms", NOT_RUN)
    txt = f"‖Δ_ES‖/‖Δ_GRPO‖ {statistics.fmean(ratios):.3g} (min {min(ratios):.3g}, max {max(ratios):.3g}, " \
          f"{len(ratios)} seed pairs)"
    info = next((E.models[m].get("es") for m in es if E.models[m].get("es")), None) or {}
    d = E.numel()
    if d and info.get("alpha") and info.get("population") and info.get("updates") and info.get("shaping") == "zscore" \
            and info.get("optimizer", "sgd") == "sgd":
        closed = info["alpha"] * math.sqrt(info["updates"] * d / info["population"])
        txt += f"; ‖Δ_ES‖ {statistics.fmean(E.norm(m) for m in es):.3g} vs closed form α√(T·d/N) = {closed:.3g}"  # type: ignore[misc]
    nv = None
    if nu:
        nv, _ = _further_verdict(E, nu, gr)
        le = [math.log(E.norm(m)) for m in es if E.norm(m)]  # type: ignore[arg-type]
        ln = [math.log(E.norm(m)) for m in nu if E.norm(m)]  # type: ignore[arg-type]
        iv = welch_interval(le, ln)
        if iv.defined:
            txt += f"; ‖Δ_ES‖/‖Δ_null‖ {math.exp(iv.mean):.4g} [{math.exp(iv.lo):.4g}, {math.exp(iv.hi):.4g}] ({iv.kind}, on log norms)"
        else:
            txt += f"; ‖Δ_ES‖/‖Δ_null‖ {math.exp(iv.mean):.4g}"
    v, note = _null_check(v, nv, "‖Δ_null‖/‖Δ_GRPO‖")
    return _row("es_moves_further", txt + note, v)


def _off_kl(E: Evidence, label: str) -> float | None:
    kl = E.ev.get("kl") or {}
    s = (kl.get("summary") or {}).get(label) or {}
    v = s.get("off_task")
    return float(v) if isinstance(v, int | float) else None


def _drift(E: Evidence, es: list[str], gr: list[str], nu: list[str]) -> dict[str, Any]:
    ke, kg, kn = ([_off_kl(E, m) for m in g] for g in (es, gr, nu))
    if not es or not gr or any(x is None for x in ke + kg):
        return _row("es_drifts_more_off_task", "no off-task KL for every ES and GRPO run", NOT_RUN)
    mg = E.margins["kl"]
    iv = welch_interval(ke, kg)
    v, note = _v(read(iv, 0.0, mg), "seeds per method")
    if not _seeds_ok(es, gr) and v in (HOLDS, FAILS, UNSURE):
        v = UNDERPOWERED
    srcs = ", ".join(s for s in ((E.ev.get("kl") or {}).get("sources") or []) if s != E.primary)
    txt = f"off-task KL ({srcs}) ES {_fmt(statistics.fmean(ke))} vs GRPO {_fmt(statistics.fmean(kg))} nats/token; " \
          f"ES − GRPO {iv.text()}{note}"  # type: ignore[arg-type]
    nv = None
    if nu and all(x is not None for x in kn):
        ivn = welch_interval(ke, kn)
        nv = read(welch_interval(kn, kg), 0.0, mg).verdict
        share = statistics.fmean(kn) / statistics.fmean(ke) if statistics.fmean(ke) else math.nan  # type: ignore[arg-type]
        txt += f"; null ES {_fmt(statistics.fmean(kn))}: ES − null {ivn.text()}; the null's drift is {share:.0%} " \
               f"of ES's (diffusion)"  # type: ignore[arg-type]
    v, note2 = _null_check(v, nv, "null ES − GRPO")
    return _row("es_drifts_more_off_task", txt + note2, v)


def _path_items(E: Evidence, a: str, b: str) -> dict[str, Any] | None:
    for p in E.ev.get("lmc") or []:
        if (p["a"], p["b"]) == (a, b):
            return p
        if (p["a"], p["b"]) == (b, a):  # reversed path: λ → 1 − λ
            return {"a": a, "b": b, "lambdas": [1 - x for x in reversed(p["lambdas"])],
                    "reward": list(reversed(p.get("reward") or [])),
                    "reward_items": list(reversed(p["reward_items"])) if p.get("reward_items") else None}
    return None


def _barriers(E: Evidence, pairs: list[tuple[str, str]], family: int | None
              ) -> dict[tuple[str, str], list[tuple[float, Interval]]]:
    """Per pair, the paired per-item barrier interval at each interior λ, Bonferroni over the pair's λ × `family`.

    `family` None: uncorrected, for the every-λ (and every-pair) rules, which are intersection–union tests.
    """
    out = {}
    for a, b in pairs:
        p = _path_items(E, a, b)
        if not p or not p.get("reward_items") or any(r is None for r in p["reward_items"]):
            continue
        lams, rows = p["lambdas"], p["reward_items"]
        inner = [(k, lam) for k, lam in enumerate(lams) if 0 < k < len(lams) - 1]
        c = 1 if family is None else max(1, len(inner) * family)
        out[(a, b)] = [(lam, t_interval(barrier_at(lam, rows[0], rows[-1], rows[k]), correction=c, unit="items"))
                       for k, lam in inner]
    return out


def _pair_readings(E: Evidence, pairs: list[tuple[str, str]], margin: float, family: int
                   ) -> tuple[dict[tuple[str, str], tuple[str, tuple[float, Interval]]], list[Interval], str]:
    """Per pair: has a barrier (some λ above the margin, Bonferroni over λ × `family`), none (every λ below,
    uncorrected: an intersection–union test), else undecided. Also the intervals that decided nothing, and
    the 'has one' correction in words."""
    some, every = _barriers(E, pairs, family), _barriers(E, pairs, None)
    out, open_ivs = {}, []
    for p in every:
        r_some = [read(iv, margin, margin) for _, iv in some[p]]
        r_every = [read(iv, margin, margin) for _, iv in every[p]]
        best = max(every[p], key=lambda t: t[1].mean)
        if any(r.verdict == HOLDS for r in r_some):
            out[p] = (HOLDS, best)
        elif all(r.verdict == FAILS for r in r_every):
            out[p] = (FAILS, best)
        else:
            out[p] = (UNDERPOWERED if any(r.verdict == UNDERPOWERED for r in r_some + r_every) else UNSURE, best)
            open_ivs += [iv for _, iv in some[p]]
    c = max((iv.correction for ivs in some.values() for _, iv in ivs), default=1)
    kind = f"Bonferroni ×{c} (λ × pairs)" if family > 1 else f"Bonferroni ×{c} over λ" if c > 1 else \
        "one interior λ, no correction"
    return out, open_ivs, kind


def _barrier_text(pair: tuple[str, str], best: tuple[float, Interval]) -> str:
    lam, iv = best
    return f"{pair[0]}→{pair[1]} {iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}] at λ={lam:.2g}"


def _needed_items(ivs: Sequence[Interval], margin: float) -> str:
    from evotune.stats import needed_n

    worst = max((iv for iv in ivs if iv.defined), key=lambda iv: iv.sd_unit, default=None)
    if worst is None:
        return ""
    n = needed_n(worst.sd_unit, margin, correction=worst.correction)
    return f"; ~{n} items per point would give half-widths ≤ the margin" if n else ""


def _barrier_claim(E: Evidence, cross: list[tuple[str, str]], same: list[tuple[str, str]]) -> dict[str, Any]:
    key = "barrier_between_solutions"
    if not cross:
        return _row(key, "needs ES and GRPO runs", NOT_RUN)
    mb = E.margins["barrier"]
    readings, open_ivs, has_one = _pair_readings(E, cross, mb, 1)  # 'every pair has one' / 'none has': no correction over pairs
    if len(readings) < len(cross):
        return _row(key, f"per-item LMC paths for {len(readings)} of {len(cross)} ES↔GRPO pairs", NOT_RUN)
    vs = [r for r, _ in readings.values()]
    v = HOLDS if all(x == HOLDS for x in vs) else FAILS if all(x == FAILS for x in vs) else \
        UNDERPOWERED if UNDERPOWERED in vs else UNSURE
    first = next(iter(readings.values()))[1][1]
    txt = (f"paired barrier at each pair's largest λ: {'; '.join(_barrier_text(p, b) for p, (_, b) in readings.items())} "
           f"({first.kind}; 'none' needs every λ below the line: uncorrected; 'has one': {has_one}); "
           f"line = margin {mb:g}; pairs with a barrier {vs.count(HOLDS)}, without {vs.count(FAILS)}, "
           f"undecided {len(vs) - vs.count(HOLDS) - vs.count(FAILS)}")
    if v == UNDERPOWERED:
        txt += _needed_items(open_ivs, mb)
    return _row(key, txt, v, items=first.n)


def _same_basin(E: Evidence, cross: list[tuple[str, str]], same: list[tuple[str, str]]) -> dict[str, Any]:
    key = "same_basin"
    if not cross or not same:
        return _row(key, "needs within- and across-method interpolation paths", NOT_RUN)
    mb = E.margins["barrier"]
    rs, open_s, kind_s = _pair_readings(E, same, mb, len(same))  # 'some same-method pair has one': over those pairs
    rc, open_c, kind_c = _pair_readings(E, cross, mb, len(cross))  # 'some ES↔GRPO pair has one': over those pairs
    if len(rs) + len(rc) < len(cross) + len(same):
        return _row(key, f"per-item LMC paths for {len(rs) + len(rc)} of {len(cross) + len(same)} pairs", NOT_RUN)
    vs, vc = [r for r, _ in rs.values()], [r for r, _ in rc.values()]
    if HOLDS in vs or all(x == FAILS for x in vc):
        v = FAILS
    elif all(x == FAILS for x in vs) and HOLDS in vc:
        v = HOLDS
    else:
        v = UNDERPOWERED if UNDERPOWERED in vs + vc else UNSURE
    worst = max(rs.items(), key=lambda kv: kv[1][1][1].mean)
    kind = worst[1][1][1].kind
    txt = (f"largest same-method barrier {_barrier_text(worst[0], worst[1][1])} ({kind}); same-method pairs without a "
           f"barrier {vs.count(FAILS)}/{len(vs)}, ES↔GRPO pairs with one {vc.count(HOLDS)}/{len(vc)}, without "
           f"{vc.count(FAILS)}/{len(vc)} (line {mb:g}; 'none': uncorrected; "
           f"'has one' (same-method): {kind_s}; 'has one' (ES↔GRPO): {kind_c})")
    if v == UNDERPOWERED:
        txt += _needed_items(open_s + open_c, mb)
    return _row(key, txt, v)


def hacking_rate(E: Evidence, label: str, task: str | None = None) -> float | None:
    """The largest detector rate above the base's on `task` (the trained task by default)."""
    h = E.ev.get("hacking") or {}
    t = task or E.primary
    mine, base = (h.get(label) or {}).get(t), (h.get(BASE) or {}).get(t) or {}
    if not mine:
        return None
    return max([0.0] + [max(0.0, float(v) - float(base.get(k) or 0.0)) for k, v in mine.items() if v is not None])


def _top_detectors(E: Evidence, labels: list[str]) -> str:
    h = E.ev.get("hacking") or {}
    base = (h.get(BASE) or {}).get(E.primary) or {}
    acc: dict[str, list[float]] = {}
    for m in labels:
        for k, v in ((h.get(m) or {}).get(E.primary) or {}).items():
            if v is not None:
                acc.setdefault(k, []).append(max(0.0, float(v) - float(base.get(k) or 0.0)))
    top = sorted(((statistics.fmean(v), k) for k, v in acc.items()), reverse=True)[:2]
    return ", ".join(f"{k.removeprefix('hack_')} +{m:.0%}" for m, k in top if m > 0) or "nothing above the base"


def _hacking(E: Evidence, es: list[str], gr: list[str], nu: list[str]) -> dict[str, Any]:
    he, hg = [hacking_rate(E, m) for m in es], [hacking_rate(E, m) for m in gr]
    if not es or not gr or any(x is None for x in he + hg):
        return _row("es_hacks_less", "no hacking detectors for every ES and GRPO run", NOT_RUN)
    iv = welch_interval(hg, he)
    mh = E.margins["hacking"]
    v, note = _v(read(iv, 0.0, mh), "seeds per method")
    txt = (f"on {E.primary}: ES {statistics.fmean(he):.3g} ({_top_detectors(E, es)}) vs GRPO {statistics.fmean(hg):.3g} "  # type: ignore[arg-type]
           f"({_top_detectors(E, gr)}); GRPO − ES {iv.text()}{note}")
    base = E.mean(BASE)
    gains = {name: [x - base for m in g if (x := E.mean(m)) is not None] for name, g in (("ES", es), ("GRPO", gr))} \
        if base is not None else {}
    if gains and all(gains.values()):  # a run that learned more had more chances to hack
        txt += "; reward gain over the base " + ", ".join(f"{k} {statistics.fmean(x):+.3g}" for k, x in gains.items())
    hn = [hacking_rate(E, m) for m in nu]
    nv = None
    if nu and None not in hn:
        ivn = welch_interval(hg, hn)
        nv = read(ivn, 0.0, mh).verdict
        txt += f"; null ES {statistics.fmean(hn):.3g}: GRPO − null {ivn.text()}"  # type: ignore[arg-type]
    v, note2 = _null_check(v, nv, "GRPO − null ES")
    return _row("es_hacks_less", txt + note2 + _off_task(E, es, gr), v)


def _off_task(E: Evidence, es: list[str], gr: list[str]) -> str:
    """Off-task reward change vs the base, or 'not measurable' where no model's score varies at all."""
    txt = ""
    for t in [t for t in (E.ev.get("tasks") or []) if t != E.primary]:
        b = E.mean(BASE, t)
        if b is None:
            continue
        scores = {x for m in [BASE, *es, *gr] for x in (E.items(m, t) or [])}
        if len(scores) == 1:
            txt += f"; off-task {t}: not measurable (every model, the base included, scores {scores.pop():g} on every item)"
            continue
        de = [x - b for m in es if (x := E.mean(m, t)) is not None]
        dg = [x - b for m in gr if (x := E.mean(m, t)) is not None]
        if de and dg:
            txt += f"; off-task {t} reward change vs base (reported apart): ES {statistics.fmean(de):+.3g}, GRPO {statistics.fmean(dg):+.3g}"
    return txt


def _layer_pair_mean(E: Evidence, a: str, b: str) -> float | None:
    vals = [E.cos(a, b, "layers", k) for k in E.layers()]
    vals = [x for x in vals if x is not None]
    return statistics.fmean(vals) if vals else None


def _agree_verdict(E: Evidence, xs: list[str], gr: list[str]) -> tuple[str, str, Interval]:
    ie = jackknife_pair_mean(xs, lambda a, b: _layer_pair_mean(E, a, b))
    ig = jackknife_pair_mean(gr, lambda a, b: _layer_pair_mean(E, a, b))
    d = diff_interval(ie, ig)
    h = E.head()
    ue = jackknife_pair_mean(xs, lambda a, b: E.cos(a, b, "modules", h)) if h else None
    ug = jackknife_pair_mean(gr, lambda a, b: E.cos(a, b, "modules", h)) if h else None
    exception = None if ue is None or ug is None or ue.mean != ue.mean or ug.mean != ug.mean else ue.mean <= ug.mean
    r = read(d, 0.0, E.margins["cosine"])
    if r.verdict == FAILS or (r.verdict == HOLDS and exception is False):
        v = FAILS
    elif r.verdict == HOLDS and exception:
        v = HOLDS
    else:
        v = r.verdict if r.verdict in (UNDERPOWERED, UNSURE) else UNSURE
    txt = (f"mean layer cos within seeds {_fmt(ie.mean)} vs GRPO {_fmt(ig.mean)}; difference {d.text()}; "
           f"unembedding {_fmt(ue.mean if ue else None)} vs {_fmt(ug.mean if ug else None)}")
    return v, txt + (f"; {r.note('seeds per method')}" if r.note("") else ""), d


def _seeds_agree(E: Evidence, es: list[str], gr: list[str], nu: list[str]) -> dict[str, Any]:
    key = "es_seeds_agree_more"
    if len(es) < 2 or len(gr) < 2 or not E.layers():
        return _row(key, "needs ≥ 2 seeds per method and update geometry", NOT_RUN)
    v, txt, _ = _agree_verdict(E, es, gr)
    if not _seeds_ok(es, gr) and v != NOT_RUN:
        v = UNDERPOWERED
    nv = None
    if len(nu) >= 2:
        nv, ntxt, _ = _agree_verdict(E, nu, gr)
        txt += f"; with the null ES in ES's place: {ntxt}"
    v, note = _null_check(v, nv, "null ES vs GRPO")
    return _row(key, f"ES: {txt}{note}", v)


def _unembedding(E: Evidence, gr: list[str]) -> dict[str, Any]:
    key = "grpo_unembedding_correlates"
    h = E.head()
    if len(gr) < 2 or not h or not E.layers():
        return _row(key, "needs ≥ 2 GRPO seeds and update geometry", NOT_RUN)

    def stat(a: str, b: str) -> float | None:
        u, o = E.cos(a, b, "modules", h), _layer_pair_mean(E, a, b)
        return None if u is None or o is None else u - 2 * o

    iv = jackknife_pair_mean(gr, stat)
    mu = statistics.fmean(x for a, b in _pairs(gr) if (x := E.cos(a, b, "modules", h)) is not None)
    mo = statistics.fmean(x for a, b in _pairs(gr) if (x := _layer_pair_mean(E, a, b)) is not None)
    r = read(iv, 0.0, 2 * E.margins["cosine"])
    v, note = _v(r, "GRPO seeds")
    if v == HOLDS and mu <= 0.1:
        v = UNSURE
    if not _seeds_ok(gr) and v in (HOLDS, FAILS, UNSURE):
        v = UNDERPOWERED
    ratio = mu / mo if mo > 0 else math.inf if mu > 0 else math.nan
    return _row(key, f"unembedding cos {mu:.3g} vs other layers {mo:.3g} (ratio {ratio:.3g}); u − 2·o {iv.text()}{note}", v)


def _half_way(p: dict[str, Any]) -> tuple[float, float]:
    lams, r = p["lambdas"], p.get("reward") or [statistics.fmean(x) for x in p["reward_items"]]
    k = min(range(len(lams)), key=lambda i: abs(lams[i] - 0.5))
    g = r[-1] - r[0]
    return g, ((r[k] - r[0]) / g if g else math.nan)


def _path_shape(E: Evidence, es: list[str], gr: list[str]) -> dict[str, Any]:
    key = "path_shape"
    mr, mf = E.margins["reward"], E.margins["fraction"]
    f: dict[str, list[float]] = {"es": [], "grpo": []}
    for meth, group in (("es", es), ("grpo", gr)):
        for m in group:
            p = _path_items(E, BASE, m)
            if p is None:
                continue
            g, frac = _half_way(p)
            if g > mr and frac == frac:
                f[meth].append(frac)
    if not f["es"] and not f["grpo"]:
        return _row(key, "no base→model paths with a gain above the reward margin", NOT_RUN)
    ie, ig = t_interval(f["es"]), t_interval(f["grpo"])
    ra, rb = read(ie, 0.25, mf), read(ig, 0.25, mf)
    va = ra.verdict
    vb = {HOLDS: FAILS, FAILS: HOLDS}.get(rb.verdict, rb.verdict)  # GRPO's half holds when f is below the line
    v = combine([va, vb])
    if (len(f["es"]) < MIN_SEEDS or len(f["grpo"]) < MIN_SEEDS) and v != FAILS:
        v = UNDERPOWERED
    d = welch_interval(f["es"], f["grpo"])
    txt = (f"half-way fraction f: ES {ie.text()} (smooth if above 0.25: {va}); GRPO {ig.text()} (flat-then-sharp if "
           f"below 0.25: {vb}); f_ES − f_GRPO {d.text()}; {len(f['es'])}+{len(f['grpo'])} paths with gain > {mr:g}")
    return _row(key, txt, v)


def _robust_curves(E: Evidence, label: str) -> tuple[float | None, list[dict[str, Any]]]:
    r = (E.ev.get("robustness") or {}).get(label) or {}
    return r.get("baseline"), sorted(r.get("curves") or [], key=lambda c: c["sigma"])


def _robust_verdict(E: Evidence, xs: list[str], gr: list[str]) -> tuple[str, str] | None:
    deg: dict[str, float] = {}
    small = None
    for m in xs + gr:
        base, curves = _robust_curves(E, m)
        if base is None or not curves or not curves[0].get("trials"):
            return None
        small = curves[0]["sigma"]
        deg[m] = base - statistics.fmean(curves[0]["trials"])
    iv = welch_interval([deg[m] for m in xs], [deg[m] for m in gr])
    ra = read(iv, 0.0, E.margins["degradation"])
    gains = []
    for sg in sorted({c["sigma"] for m in xs for c in _robust_curves(E, m)[1][1:]}):
        per = []
        for m in xs:
            base, curves = _robust_curves(E, m)
            trials = next((c["trials"] for c in curves if c["sigma"] == sg), None)
            if trials and base is not None:
                per.append(statistics.fmean(trials) - base)
        gains.append((sg, per))
    gains = [(sg, t_interval(per, correction=len(gains))) for sg, per in gains]  # "at some larger σ": simultaneous
    rb = max((read(iv_, 0.0, E.margins["degradation"]).verdict for _, iv_ in gains),
             key=[FAILS, UNSURE, UNDERPOWERED, HOLDS].index, default=UNSURE)
    v = FAILS if ra.verdict == FAILS else combine([ra.verdict, rb])
    trials = len(_robust_curves(E, xs[0])[1][0]["trials"])
    gtxt = "; ".join(f"σ={sg:g} {iv_.text()}" for sg, iv_ in gains) or "n/a (no larger σ)"
    return v, (f"degradation at σ={small:g} (mean of {trials} trials), difference {iv.text()}"
               f"{'; ' + ra.note('seeds per method') if ra.note('') else ''}; mean gain over trials at larger σ: {gtxt}")


def _robustness(E: Evidence, es: list[str], gr: list[str], nu: list[str]) -> dict[str, Any]:
    key = "grpo_more_robust"
    res = _robust_verdict(E, es, gr) if es and gr else None
    if res is None:
        return _row(key, "no robustness curves for every ES and GRPO run", NOT_RUN)
    v, txt = res
    if not _seeds_ok(es, gr) and v in (HOLDS, UNSURE):
        v = UNDERPOWERED
    nv = None
    if nu:
        nres = _robust_verdict(E, nu, gr)
        if nres:
            nv = nres[0]
            txt += f"; null ES in ES's place: {nres[1]}"
    v, note = _null_check(v, nv, "null ES vs GRPO")
    return _row(key, f"ES − GRPO {txt}{note}", v)


def _passk(E: Evidence) -> dict[str, Any]:
    key = "temperature_beats_perturbation"
    res = E.ev.get("passk")
    if not res:
        return _row(key, "not measured: set analysis.passk_n > 0 to run it", NOT_RUN)
    n = int(res["n"])
    ct, cp = res["temperature"]["counts"], res["perturbation"]["counts"]
    if len(ct) != len(cp):
        return _row(key, "temperature and perturbation prompts differ", NOT_RUN)
    ks = sorted({*(2**i for i in range(n.bit_length()) if 2**i <= n), n})
    ivs = [(k, paired_interval([pass_at_k(n, a, k) for a in ct], [pass_at_k(n, b, k) for b in cp],
                               correction=len(ks), unit="prompts")) for k in ks]
    solved_t = statistics.fmean(pass_at_k(n, c, n) for c in ct)
    solved_p = statistics.fmean(pass_at_k(n, c, n) for c in cp)
    head = (f"on {res.get('task') or E.primary}, pass@{n}: T={res['temperature']['value']:g} {solved_t:.3g} vs "
            f"σ={res['perturbation']['value']:g} {solved_p:.3g} over {len(ct)} prompts")
    if not any(ct) and not any(cp):
        return _row(key, head + "; nothing solved at the largest k by either: not testable here", NOT_TESTABLE)
    mk = E.margins["passk"]
    readings = [read(iv, 0.0, mk) for _, iv in ivs]
    vs = [r.verdict for r in readings]
    v = HOLDS if all(x == HOLDS for x in vs) else FAILS if FAILS in vs else \
        UNDERPOWERED if UNDERPOWERED in vs else UNSURE
    txt = head + "; temperature − perturbation " + ", ".join(
        f"k={k}: {iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}]" for k, iv in ivs) + f" ({ivs[0][1].kind})"
    # how much either sampler varies at all: a prompt solved by all n or none has no within-prompt diversity
    flat = {name: sum(c in (0, n) for c in cs) / len(cs) for name, cs in (("temperature", ct), ("perturbation", cp))}
    txt += (f"; prompts with all {n} or none solved: temperature {flat['temperature']:.0%}, perturbation "
            f"{flat['perturbation']:.0%}")
    if res.get("perturbation_draws") != "per prompt" and (res.get("settings") or {}).get("perturbation_draws") != "per prompt":
        txt += "; the perturbed models were shared by every prompt: this interval leaves their variance out"
        v = UNSURE if v in (HOLDS, FAILS) else v
    return _row(key, txt, v)


def _sampler(E: Evidence, es: list[str], gr: list[str], hy: list[str]) -> dict[str, Any]:
    key = "es_sampling_gradient_update"
    if not hy:
        return _row(key, "not run: the study trained no grpo_es runs (add grpo_es to `methods`)", NOT_RUN)
    measures = {
        "reward": lambda m: E.mean(m),
        "off-task KL": lambda m: _off_kl(E, m),
        "hacking": lambda m: hacking_rate(E, m),
    }
    parts, vs = [], []
    for name, fn in measures.items():
        xe, xg, xh = ([fn(m) for m in g] for g in (es, gr, hy))
        if any(x is None for x in xe + xg + xh):
            parts.append(f"{name}: n/a")
            continue
        sep = welch_interval(xe, xg)
        if not (sep.defined and (sep.lo > 0 or sep.hi < 0)):
            parts.append(f"{name}: ES and GRPO not separated ({sep.text()}); H {statistics.fmean(xh):.3g}")  # type: ignore[arg-type]
            continue
        iv = fieller_position(xh, xe, xg)  # type: ignore[arg-type]
        r = read(iv, 0.5, E.margins["position"])
        vs.append(r.verdict if iv.defined else UNDERPOWERED)
        parts.append(f"{name}: p {iv.text()} (ES {statistics.fmean(xe):.3g}, GRPO {statistics.fmean(xg):.3g}, "  # type: ignore[arg-type]
                     f"H {statistics.fmean(xh):.3g})")  # type: ignore[arg-type]
    ratio = [E.norm(h) / E.norm(g) for h in hy for g in gr if E.norm(h) and E.norm(g)]  # type: ignore[operator]
    ce = [c for h in hy for o in es if (c := E.cos(h, o)) is not None]
    cg = [c for h in hy for o in gr if (c := E.cos(h, o)) is not None]
    geo = (f"‖Δ_H‖/‖Δ_GRPO‖ {statistics.fmean(ratio):.3g}" if ratio else "‖Δ_H‖ n/a") + \
        (f"; cos(Δ_H, Δ_ES) {statistics.fmean(ce):.2g}, cos(Δ_H, Δ_GRPO) {statistics.fmean(cg):.2g}" if ce and cg else "")
    if not vs:
        v = UNSURE
    elif all(x == HOLDS for x in vs):
        v = HOLDS
    elif all(x == FAILS for x in vs):
        v = FAILS
    else:
        v = UNDERPOWERED if UNDERPOWERED in vs else UNSURE
    if not _seeds_ok(es, gr, hy) and v in (HOLDS, FAILS):
        v = UNDERPOWERED
    return _row(key, f"{'; '.join(parts)}; {geo}; {len(es)}+{len(gr)}+{len(hy)} seeds (ES+GRPO+H)", v)
