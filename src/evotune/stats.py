"""evotune's statistics, in one torch-free module: intervals, tests and the verdicts drawn from them.

Everything here is plain Python over lists of numbers (scipy for exact t quantiles, imported when
first needed), so a study can be re-judged from its evidence file without torch or a model.

Conventions a reviewer can check:
- Intervals are two-sided Student-t with exact quantiles (`t_quantile`), never ±2·SE or 1.96 at
  small df. The replicate is whatever was sampled: seeds for method-level claims (df = n − 1, or
  Welch–Satterthwaite for a difference of two groups), items for a paired comparison of two fixed
  models (df = items − 1).
- Every `Interval` carries its kind (`"95% t, df=2"`, with the correction when one applies), and the
  text written next to a number comes from it.
- A verdict reads an interval against a line with a margin (the smallest effect that matters):
  above → holds, below → does not hold; an interval across the line is "underpowered" when it
  reaches past the margin on both sides (the n that would resolve it is reported), else
  "inconclusive" (the data sit on the line).
- Multiplicity: `bonferroni` simultaneous intervals where a verdict picks among many (pairs × λ,
  several k), `holm` for families of p-values; intersection–union rules ("every pair above") need none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

HOLDS, FAILS, UNSURE, UNDERPOWERED = "holds", "does not hold", "inconclusive", "underpowered"
NOT_INFORMATIVE, NOT_TESTABLE, NOT_RUN = "not informative", "not testable", "not run"
VERDICTS = (HOLDS, FAILS, UNSURE, UNDERPOWERED, NOT_INFORMATIVE, NOT_TESTABLE, NOT_RUN)
LEVEL = 0.95


def _fmean(values: Any) -> float:
    xs = list(values)
    return math.fsum(xs) / len(xs)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided `level` Student-t quantile t_{(1+level)/2, df}; NaN below one degree of freedom."""
    if not df >= 1 or not 0 < level < 1:
        return math.nan
    from scipy.stats import t  # exact for every df (a table with 1.96 beyond 30 is not)

    return float(t.ppf(0.5 + level / 2, df))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1): NaN for a single value (its spread is unknown, not 0)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = math.fsum(values) / n
    return m, (math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan)


def mean_se(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and standard error (sample std / √n) of the finite values; SE is NaN with fewer than two."""
    finite = _finite(values)
    m, sd = mean_std(finite)
    return m, (sd / math.sqrt(len(finite)) if len(finite) > 1 else math.nan)


def ratio_mean_se(sums: Sequence[float], counts: Sequence[int]) -> tuple[float, float]:
    """Per-token mean Σs/Σn with a standard error clustered by sequence.

    Tokens of one completion are correlated, so treating them as independent would understate
    the error; the linearised ratio estimator treats each sequence as one sample instead.
    """
    total = sum(counts)
    m = len(sums)
    if total == 0:
        return math.nan, math.nan
    mean = math.fsum(sums) / total
    if m < 2:
        return mean, math.nan
    resid = math.fsum((s - mean * c) ** 2 for s, c in zip(sums, counts, strict=True))
    return mean, math.sqrt(m / (m - 1) * resid) / total


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval and what kind of interval it is.

    `half` is the half-width; `sd_unit` the standard deviation of one replicate (for the n needed);
    `unit` names the replicate ("seeds", "items", "seed pairs"). Bounds are NaN when undefined.
    """

    mean: float
    lo: float
    hi: float
    df: float
    n: int
    unit: str = "seeds"
    level: float = LEVEL
    correction: int = 1
    sd_unit: float = math.nan
    kind_override: str | None = None
    exact_p: float = math.nan  # zero spread: the exact (sign or rank) test's two-sided p, which still decides

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2 if self.defined else math.nan

    @property
    def defined(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def kind(self) -> str:
        if self.kind_override:
            return self.kind_override
        df = f"{self.df:.3g}" if self.df == self.df else "n/a"
        corr = f", Bonferroni ×{self.correction}" if self.correction > 1 else ""
        return f"{self.level:.0%} t, df={df}, n={self.n} {self.unit}{corr}"

    @property
    def zero_spread(self) -> bool:
        """Every replicate gave the same value: a t interval would have width 0, which no data can justify."""
        return self.sd_unit == 0 and self.n >= 2

    def text(self, digits: int = 3) -> str:
        """`m [lo, hi] (kind)`; just `m (n=…)` when the interval is undefined."""
        if self.mean != self.mean:
            return "n/a"
        m = f"{self.mean:.{digits}g}"
        if self.zero_spread:
            return f"{m} (no interval: zero spread over n={self.n} {self.unit})"
        if not self.defined:
            return f"{m} (no interval: n={self.n} {self.unit})"
        return f"{m} [{self.lo:.{digits}g}, {self.hi:.{digits}g}] ({self.kind})"

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "df": self.df, "n": self.n, "unit": self.unit,
                "level": self.level, "correction": self.correction, "kind": self.kind}


def _adjusted(level: float, correction: int) -> float:
    return 1 - (1 - level) / max(1, correction)


def t_interval(values: Sequence[float | None], level: float = LEVEL, correction: int = 1,
               unit: str = "seeds") -> Interval:
    """One-sample t interval of the mean (df = n − 1); `correction` > 1 makes it Bonferroni-simultaneous."""
    vals = _finite(values)
    m, sd = mean_std(vals)
    n = len(vals)
    if n < 2 or sd == 0:  # one value, or no spread: no interval (zero width would claim certainty)
        return Interval(m, math.nan, math.nan, n - 1 if n > 1 else math.nan, n, unit, level, correction, sd,
                        exact_p=min(1.0, 2 * 0.5**n) if n > 1 else math.nan)  # all n on one side: sign test
    half = t_quantile(n - 1, _adjusted(level, correction)) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n - 1, n, unit, level, correction, sd)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL, correction: int = 1,
                    unit: str = "items") -> Interval:
    """mean(a − b) over units scored under both (same units, same order), with its t interval."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same units: {len(a)} vs {len(b)} values")
    return t_interval([x - y for x, y in zip(a, b, strict=True)], level, correction, unit)


def welch_df(va: float, na: int, vb: float, nb: int) -> float:
    """Welch–Satterthwaite degrees of freedom of mean(a) − mean(b), given sample variances."""
    qa, qb = va / na, vb / nb
    den = (qa * qa / (na - 1) if na > 1 else 0.0) + (qb * qb / (nb - 1) if nb > 1 else 0.0)
    return (qa + qb) ** 2 / den if den > 0 else float(na + nb - 2)


def welch_interval(a: Sequence[float | None], b: Sequence[float | None], level: float = LEVEL,
                   correction: int = 1, unit: str = "seeds") -> Interval:
    """mean(a) − mean(b) for two independent groups, Welch's t interval (unequal variances)."""
    xa, xb = _finite(a), _finite(b)
    (ma, sa), (mb, sb) = mean_std(xa), mean_std(xb)
    d = ma - mb
    n = len(xa) + len(xb)
    if len(xa) < 2 or len(xb) < 2:
        return Interval(d, math.nan, math.nan, math.nan, n, unit, level, correction)
    va, vb = sa * sa, sb * sb
    se = math.sqrt(va / len(xa) + vb / len(xb))
    # SE = sd_unit/√n with n per group (equal groups): what `needed_n` scales, so its n is per group
    sd_unit = math.sqrt(va + vb)
    if se == 0:  # both groups without spread: no interval (zero width would claim certainty)
        exact = min(1.0, 2 / math.comb(n, len(xa)))  # every a beyond every b: the exact rank-sum test
        return Interval(d, math.nan, math.nan, math.nan, n, unit + " (Welch)", level, correction, 0.0, exact_p=exact)
    df = welch_df(va, len(xa), vb, len(xb))
    half = t_quantile(df, _adjusted(level, correction)) * se
    return Interval(d, d - half, d + half, df, n, unit + " (Welch)", level, correction, sd_unit)


def fieller_position(h: Sequence[float], e: Sequence[float], g: Sequence[float],
                     level: float = LEVEL) -> Interval:
    """p = (μ_H − μ_G) / (μ_E − μ_G): where group H sits between G (0) and E (1), with Fieller's interval.

    All three groups' uncertainty counts (a plug-in of the E and G means as exact would not): the
    interval is {p : |U(p)| ≤ t·se(U(p))} for U(p) = h̄ − p·ē − (1 − p)·ḡ, with Welch–Satterthwaite df
    at p̂. When μ_E − μ_G is not resolved from 0 the set is unbounded and the bounds are NaN.
    """
    xh, xe, xg = _finite(h), _finite(e), _finite(g)
    n = len(xh) + len(xe) + len(xg)
    if min(len(xh), len(xe), len(xg)) < 2:
        return Interval(math.nan, math.nan, math.nan, math.nan, n, "seeds (Fieller)", level)
    (mh, sh), (me, se_), (mg, sg) = mean_std(xh), mean_std(xe), mean_std(xg)
    vh, ve, vg = sh * sh / len(xh), se_ * se_ / len(xe), sg * sg / len(xg)
    den = me - mg
    p = (mh - mg) / den if den else math.nan
    if p != p:
        return Interval(p, math.nan, math.nan, math.nan, n, "seeds (Fieller)", level)
    parts = [(vh, len(xh)), (p * p * ve, len(xe)), ((1 - p) ** 2 * vg, len(xg))]
    tot = sum(v for v, _ in parts)
    dfd = sum(v * v / (k - 1) for v, k in parts)
    df = tot * tot / dfd if dfd > 0 else float(n - 3)
    t2 = t_quantile(df, level) ** 2
    # U(p)² − t²·Var(U(p)) ≤ 0, with U(p) = (mh − mg) − p·den and Var = vh + p²ve + (1 − p)²vg
    a = den * den - t2 * (ve + vg)
    b = -2 * (mh - mg) * den - t2 * (-2 * vg)
    c = (mh - mg) ** 2 - t2 * (vh + vg)
    disc = b * b - 4 * a * c
    kind = f"{level:.0%} Fieller, df={df:.3g}, n={len(xh)}+{len(xe)}+{len(xg)} seeds"
    if a <= 0 or disc < 0:  # the denominator is not resolved from 0: the set is unbounded
        return Interval(p, math.nan, math.nan, df, n, "seeds (Fieller)", level, kind_override=kind + ", unbounded")
    r = math.sqrt(disc)
    lo, hi = (-b - r) / (2 * a), (-b + r) / (2 * a)
    return Interval(p, lo, hi, df, n, "seeds (Fieller)", level, kind_override=kind)


def needed_n(sd: float, margin: float, level: float = LEVEL, correction: int = 1, cap: int = 100_000,
             power: float | None = None) -> int | None:
    """The smallest n whose t interval half-width t_{n−1}·sd/√n is at most `margin` (None if over `cap`).

    That is a precision target: with a true effect of exactly one margin it decides only about half the
    time. With `power` (e.g. 0.8) it is the usual t-test sample size instead: the smallest n with
    (t_{n−1, level} + t_{n−1, power})·sd/√n ≤ margin, so an effect of one margin is resolved with that
    probability. Either way `sd` is an estimate: from 3 seeds it is uncertain, and so is n.
    """
    if not (sd == sd and margin > 0) or sd <= 0:
        return 2 if sd == 0 else None
    lvl = _adjusted(level, correction)

    def ok(n: int) -> bool:  # (t_{n−1} [+ t_{n−1, power}])·sd/√n falls with n: binary search
        q = t_quantile(n - 1, lvl) + (t_quantile(n - 1, 2 * power - 1) if power else 0.0)
        return q * sd / math.sqrt(n) <= margin

    z = t_quantile(1e9, lvl) + (t_quantile(1e9, 2 * power - 1) if power else 0.0)
    lo = max(2, math.ceil((z * sd / margin) ** 2))  # the normal bound: never enough alone
    if ok(lo):
        return lo
    hi = lo * 2
    while not ok(hi):
        if hi > cap:
            return None
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Reading:
    """An interval read against a line: the verdict and, when underpowered, the n that would decide it.

    `needed` is the precision target (half-width ≤ margin), `needed_80` the n for 80% power at an
    effect of one margin; `why` explains a verdict that has no interval behind it.
    """

    verdict: str
    needed: int | None = None
    needed_80: int | None = None
    why: str = ""

    def note(self, unit: str) -> str:
        if self.why:
            return self.why.format(unit=unit)
        if self.verdict != UNDERPOWERED:
            return ""
        if not self.needed:
            return "underpowered: more data than is practical"
        power = f", ~{self.needed_80} for 80% power at an effect of one margin" if self.needed_80 else ""
        return f"underpowered: ~{self.needed} {unit} for a half-width ≤ the margin{power} (SD from these data)"


def _exact(iv: Interval, side: str) -> Reading:
    """Zero spread: no t interval, but an exact test of "every replicate on one side" still decides."""
    alpha = (1 - iv.level) / max(1, iv.correction)
    if iv.exact_p <= alpha:
        return Reading(side, why=f"zero spread over {iv.n} {{unit}}: exact test p = {iv.exact_p:.2g}")
    return Reading(UNDERPOWERED, why=f"underpowered: zero spread over {iv.n} {{unit}}, exact test p = "
                   f"{iv.exact_p:.2g} > {alpha:.2g}: too few {{unit}} to decide")


def _undefined(iv: Interval) -> Reading:
    if iv.zero_spread:
        return Reading(UNSURE, why=f"inconclusive: zero spread over {iv.n} {{unit}}, so no interval")
    if iv.df != iv.df:
        return Reading(UNDERPOWERED, why="underpowered: too few {unit} for any interval")
    return Reading(UNDERPOWERED)


def read(iv: Interval, line: float, margin: float) -> Reading:
    """holds (interval above `line`), does not hold (below), else underpowered or inconclusive.

    Underpowered: the interval reaches past `margin` on both sides of the line, so it cannot tell an
    effect that matters from its opposite. Inconclusive: it crosses the line but not that widely.
    """
    if line != line:
        return Reading(UNSURE)
    if iv.zero_spread and iv.mean != line:
        return _exact(iv, HOLDS if iv.mean > line else FAILS)
    if not iv.defined:
        return _undefined(iv)
    if iv.lo > line:
        return Reading(HOLDS)
    if iv.hi < line:
        return Reading(FAILS)
    if margin > 0 and iv.lo < line - margin and iv.hi > line + margin:
        return Reading(UNDERPOWERED, *_needed(iv, margin))
    return Reading(UNSURE)


def read_equivalence(iv: Interval, margin: float) -> Reading:
    """"Comparable": holds if the interval lies inside ±margin, does not hold if wholly outside it.

    An interval wider than the margin band (half-width > margin) can never fall inside it: that is
    underpowered, with the n that would make the half-width fit.
    """
    if iv.zero_spread and margin > 0 and abs(iv.mean) != margin:
        return _exact(iv, HOLDS if abs(iv.mean) < margin else FAILS)
    if not iv.defined:
        return _undefined(iv)
    if not margin > 0:
        return Reading(UNSURE)
    if -margin < iv.lo and iv.hi < margin:
        return Reading(HOLDS)
    if iv.lo > margin or iv.hi < -margin:
        return Reading(FAILS)
    if iv.half > margin:
        return Reading(UNDERPOWERED, *_needed(iv, margin))
    return Reading(UNSURE)


def _needed(iv: Interval, margin: float) -> tuple[int | None, int | None]:
    sd = iv.sd_unit
    if sd != sd and iv.defined and iv.n >= 2:  # recover it from the half-width
        sd = iv.half / t_quantile(iv.df, _adjusted(iv.level, iv.correction)) * math.sqrt(iv.n)
    return needed_n(sd, margin, iv.level, iv.correction), needed_n(sd, margin, iv.level, iv.correction, power=0.8)


def combine(verdicts: Sequence[str]) -> str:
    """All of several parts must hold for "holds"; any part that does not hold decides "does not hold"."""
    vs = list(verdicts)
    if not vs:
        return UNSURE
    if FAILS in vs:
        return FAILS
    if all(v == HOLDS for v in vs):
        return HOLDS
    return UNDERPOWERED if UNDERPOWERED in vs else UNSURE


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given); reject where adjusted ≤ α."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def permutation_p(a: Sequence[Any], b: Sequence[Any], statistic: Callable[[list[Any], list[Any]], float],
                  alternative: str = "greater") -> tuple[float, int]:
    """Exact permutation p-value of statistic(a, b) over every split of a ∪ b into groups of their sizes.

    For statistics of *pairs* within a group (e.g. cosines between seeds' updates), the replicate is
    the model: relabelling models, not pairs, keeps the dependence between pairs that share a model.
    Returns (p, number of splits); the smallest attainable p is 1/splits.
    """
    pool = list(a) + list(b)
    na = len(a)
    obs = statistic(list(a), list(b))
    xs = [statistic([pool[i] for i in idx], [pool[i] for i in range(len(pool)) if i not in set(idx)])
          for idx in combinations(range(len(pool)), na)]
    return _tail_p(obs, xs, alternative), len(xs)


def _tail_p(obs: float, xs: Sequence[float], alternative: str) -> float:
    """Share of the arrangements' statistics `xs` at least as extreme as `obs` (with a relative float tolerance)."""
    tol = 1e-12 * abs(obs)
    if alternative == "greater":
        hits = sum(x >= obs - tol for x in xs)
    elif alternative == "less":
        hits = sum(x <= obs + tol for x in xs)
    else:
        hits = sum(abs(x) >= abs(obs) - tol for x in xs)
    return hits / len(xs)


def paired_permutation_p(a: Sequence[Any], b: Sequence[Any], statistic: Callable[[list[Any], list[Any]], float],
                         alternative: str = "greater") -> tuple[float, int]:
    """Exact permutation p over the 2^n swaps within pairs (a[i], b[i]): for designs that pair them.

    When a[i] and b[i] share something that others do not (an ES run and its null share the seed's
    noise draws), only swaps within a pair keep the design under the null hypothesis; splits that
    put both of a pair in one group are not exchangeable with the observed one. Smallest p: 1/2^n.
    """
    if len(a) != len(b):
        raise ValueError(f"a paired permutation test needs pairs: {len(a)} vs {len(b)}")
    obs = statistic(list(a), list(b))
    n = len(a)
    xs = [statistic([b[i] if mask >> i & 1 else a[i] for i in range(n)],
                    [a[i] if mask >> i & 1 else b[i] for i in range(n)]) for mask in range(1 << n)]
    return _tail_p(obs, xs, alternative), len(xs)


def jackknife_pair_mean(labels: Sequence[Any], value: Callable[[Any, Any], float | None]) -> Interval:
    """Mean of value(i, j) over seed pairs with a t interval whose SE is the jackknife over seeds.

    Pairs that share a seed are dependent, so pairs are not the replicate: leaving one seed out at a
    time gives n pseudo-estimates whose spread estimates the SE of the mean (df = seeds − 1).
    """
    labels = list(labels)
    vals = {(a, b): value(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]}
    ok = [v for v in vals.values() if v is not None and math.isfinite(v)]
    n = len(labels)
    mean = _fmean(ok) if ok else math.nan
    if n < 3 or len(ok) < len(vals):
        return Interval(mean, math.nan, math.nan, math.nan, n, "seeds (jackknife)")
    loo = []
    for drop in labels:  # leave one seed out: the pairs without it
        rest = [v for (a, b), v in vals.items() if drop not in (a, b)]
        loo.append(_fmean(rest))
    mbar = _fmean(loo)
    se = math.sqrt((n - 1) / n * sum((x - mbar) ** 2 for x in loo))
    half = t_quantile(n - 1) * se
    return Interval(mean, mean - half, mean + half, n - 1, n, "seeds (jackknife)", sd_unit=se * math.sqrt(n))


def diff_interval(a: Interval, b: Interval) -> Interval:
    """a − b for two independent jackknife/t estimates: SEs in quadrature, Welch–Satterthwaite df."""
    if not (a.defined and b.defined):
        return Interval(a.mean - b.mean, math.nan, math.nan, math.nan, a.n + b.n, "seeds (jackknife)")
    qa = (a.half / t_quantile(a.df, _adjusted(a.level, a.correction))) ** 2  # each SE back from its own interval
    qb = (b.half / t_quantile(b.df, _adjusted(b.level, b.correction))) ** 2
    den = qa * qa / a.df + qb * qb / b.df
    df = (qa + qb) ** 2 / den if den > 0 else a.df + b.df
    half = t_quantile(df) * math.sqrt(qa + qb)
    d = a.mean - b.mean
    sd = math.sqrt(qa * a.n + qb * b.n)  # SE = sd/√n per group, as for Welch
    return Interval(d, d - half, d + half, df, a.n + b.n, "seeds (jackknife, Welch df)", sd_unit=sd)


def shared_fraction(vectors: Sequence[Sequence[float]]) -> float:
    """φ = mean over pairs ⟨u_i, u_j⟩ / mean ‖u_i‖²: 1 if every u is the same, ≈ 0 for independent directions."""
    sq = [math.fsum(x * x for x in u) for u in vectors]
    dots = [math.fsum(x * y for x, y in zip(vectors[i], vectors[j], strict=True))
            for i in range(len(vectors)) for j in range(i + 1, len(vectors))]
    return _fmean(dots) / _fmean(sq) if dots and _fmean(sq) > 0 else math.nan


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 − C(n−c, k)/C(n, k), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for j in range(n - c + 1, n + 1):
        prod *= 1.0 - k / j
    return 1.0 - prod


def barrier_at(lam: float, ra: Sequence[float], rb: Sequence[float], r: Sequence[float]) -> list[float]:
    """Per-item barrier at λ: (1−λ)·R_A,ᵢ + λ·R_B,ᵢ − R_λ,ᵢ (positive: the path dips below the chord)."""
    return [(1 - lam) * a + lam * b - x for a, b, x in zip(ra, rb, r, strict=True)]


def barrier_items(lambdas: Sequence[float], items: Sequence[Sequence[float]]) -> tuple[float, list[float]]:
    """(λ*, per-item barrier at λ*) at the interior λ whose mean barrier is largest.

    `items[k]` are the per-item rewards at `lambdas[k]` (λ=0 first, λ=1 last, the same items at every
    point). A 2-point path has no interior: the barrier is 0. Picking the largest of several interior
    means selects: a verdict on it must correct for the λ it chose among (`Interval.correction`).
    """
    if len(lambdas) != len(items) or len(lambdas) < 2:
        raise ValueError("barrier_items needs per-item rewards at every λ, endpoints included")
    ra, rb = items[0], items[-1]
    if any(len(row) != len(ra) for row in items):
        raise ValueError("every λ point must be scored on the same items (different item counts found)")
    best_lam, best, best_mean = lambdas[0], [0.0] * len(ra), -math.inf
    for lam, row in zip(lambdas[1:-1], items[1:-1], strict=True):
        gaps = barrier_at(lam, ra, rb, row)
        m = math.fsum(gaps) / len(gaps) if gaps else 0.0
        if m > best_mean:
            best_lam, best, best_mean = lam, gaps, m
    return best_lam, best
