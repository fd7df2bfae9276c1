"""Paired statistics on items every model was scored on: differences per item, then a t interval.

Two models (or two points on an interpolation path) evaluated on the same held-out items share
each item's difficulty; differencing per item removes it, so the interval is the one of the
*difference*, usually far narrower than either model's own SE. Intervals are two-sided 95%
Student-t (a small table; no scipy), so they stay honest with 3 seeds as with 300 items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from evotune.analysis.common import mean_std
from evotune.errors import AnalysisError

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30; larger df use the normal 1.96
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% Student-t quantile (half-width factor of a 95% interval) for `df` degrees of freedom."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lower, upper) of a 95% t interval; the bounds are NaN with fewer than two values."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    m, sd = mean_std(vals)
    if len(vals) < 2:
        return m, math.nan, math.nan
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals))
    return m, m - half, m + half


def paired_diff(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a_i − b_i for items scored under both; the lists must be the same items in the same order."""
    if len(a) != len(b):
        raise AnalysisError(f"paired comparison needs the same items: {len(a)} vs {len(b)} scores")
    return [x - y for x, y in zip(a, b, strict=True)]


def barrier_items(lambdas: Sequence[float], items: Sequence[Sequence[float]]) -> tuple[float, list[float]]:
    """(λ*, per-item barrier at λ*): barrierᵢ(λ) = (1−λ)R_A,ᵢ + λR_B,ᵢ − R_λ,ᵢ at the λ whose mean is largest.

    `items[k]` are the per-item rewards at `lambdas[k]` (λ=0 first, λ=1 last, the same items at
    every point). At the endpoints the barrier is 0 by construction (a 2-point path has only
    those); otherwise λ* is the interior point with the largest mean gap, even when it is negative
    (the path above the chord), so its interval still shows how well the items pin it down. Taking
    the largest of the interior means favours finding a barrier, which makes "no barrier" the
    conservative verdict to reach.
    """
    if len(lambdas) != len(items) or len(lambdas) < 2:
        raise AnalysisError("barrier_items needs per-item rewards at every λ, endpoints included")
    ra, rb = items[0], items[-1]
    if any(len(row) != len(ra) for row in items):
        raise AnalysisError("every λ point must be scored on the same items (different item counts found)")
    best_lam, best, best_mean = lambdas[0], [0.0] * len(ra), -math.inf
    for lam, row in zip(lambdas[1:-1], items[1:-1], strict=True):
        gaps = [(1 - lam) * a + lam * b - r for a, b, r in zip(ra, rb, row, strict=True)]
        m = math.fsum(gaps) / len(gaps) if gaps else 0.0
        if m > best_mean:
            best_lam, best, best_mean = lam, gaps, m
    return best_lam, best
