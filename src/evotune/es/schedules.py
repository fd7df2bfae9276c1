"""α and σ as pure functions of the iteration: warm-up, then constant, linear, cosine or exponential.

Training, resume, replay and Ray replicas all call `value(base, schedule, k)`, so the rate an
iteration used is never stored and never drifts. k is 1-based (the trajectory's `step`).
"""

from __future__ import annotations

import math

from evotune.config import ESConfig, ScheduleConfig


def value(base: float, s: ScheduleConfig, k: int) -> float:
    """The rate of iteration k. `constant` with no warm-up returns `base` itself (bit for bit)."""
    if k < 1:
        raise ValueError(f"iterations are numbered from 1, got {k}")
    if k <= s.warmup:
        return base * k / s.warmup  # linear ramp: base/warmup at k=1, base at k=warmup
    if s.kind == "constant":
        return base
    t = k - s.warmup  # iterations since warm-up ended (1 = the first decayed one)
    if s.kind == "exponential":
        return base * s.gamma**t
    span = max(1, (s.horizon or k) - s.warmup)
    frac = min(1.0, t / span)  # past the horizon the rate stays at its end value
    if s.kind == "linear":
        return base * (1.0 - (1.0 - s.end) * frac)
    return base * (s.end + (1.0 - s.end) * 0.5 * (1.0 + math.cos(math.pi * frac)))  # cosine


def alpha_at(es: ESConfig, k: int) -> float:
    return value(es.alpha, es.alpha_schedule, k)


def sigma_at(es: ESConfig, k: int) -> float:
    return value(es.sigma, es.sigma_schedule, k)
