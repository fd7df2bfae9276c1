"""evotune.stats against scipy and hand-computed values: the intervals and tests the study's verdicts use."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
from scipy import stats as sps

from evotune.stats import (
    FAILS,
    HOLDS,
    UNDERPOWERED,
    UNSURE,
    barrier_items,
    combine,
    fieller_position,
    holm,
    needed_n,
    paired_interval,
    pass_at_k,
    permutation_p,
    read,
    read_equivalence,
    t_interval,
    t_quantile,
    welch_interval,
)


def test_t_quantiles_are_exact_at_every_df():
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(47) == pytest.approx(2.0117, abs=1e-4)
    assert t_quantile(40) == pytest.approx(2.0211, abs=1e-4)  # not 1.96 past df 30
    assert t_quantile(2, 0.99) == pytest.approx(9.9248, abs=1e-4)
    assert math.isnan(t_quantile(0))


def test_t_interval_matches_scipy_and_says_its_kind():
    xs = [1.0, 2.5, 2.0, 4.0]
    iv = t_interval(xs)
    lo, hi = sps.t.interval(0.95, 3, loc=sum(xs) / 4, scale=sps.sem(xs))
    assert (iv.lo, iv.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert iv.kind == "95% t, df=3, n=4 seeds" and "[" in iv.text()
    b = t_interval(xs, correction=3)
    assert b.hi - b.lo > iv.hi - iv.lo and "Bonferroni ×3" in b.kind
    assert math.isnan(t_interval([1.0]).lo)


def test_welch_matches_scipy():
    rng = random.Random(0)
    a = [rng.gauss(1, 1) for _ in range(3)]
    b = [rng.gauss(0, 3) for _ in range(4)]
    iv = welch_interval(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (iv.lo, iv.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert "Welch" in iv.kind


def test_paired_interval_is_the_interval_of_differences():
    a, b = [3.0, 5.0, 4.0, 6.0], [2.0, 4.5, 3.0, 5.0]
    iv = paired_interval(a, b)
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (iv.lo, iv.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    with pytest.raises(ValueError, match="same units"):
        paired_interval([1.0], [1.0, 2.0])


def test_fieller_position_counts_all_three_groups():
    h, e, g = [5.0, 5.5, 4.5], [10.0, 10.5, 9.5], [0.0, 0.5, -0.5]
    iv = fieller_position(h, e, g)
    assert iv.mean == pytest.approx(0.5) and iv.lo < 0.5 < iv.hi
    # E's and G's spread widens it (a plug-in of their means as exact would not)
    hs = [5.0, 5.05, 4.95]
    narrow = fieller_position(hs, [10.0, 10.05, 9.95], [0.0, 0.05, -0.05])
    wide = fieller_position(hs, [10.0, 11.0, 9.0], [0.0, 1.0, -1.0])
    assert wide.hi - wide.lo > 2 * (narrow.hi - narrow.lo)
    # the interval is where |U(p)| <= t·se(U(p)): check the bounds solve it
    for p in (iv.lo, iv.hi):
        u = 5.0 - p * 10.0 - (1 - p) * 0.0
        var = 0.25 / 3 * (1 + p * p + (1 - p) ** 2)
        assert abs(u) == pytest.approx(t_quantile(iv.df) * math.sqrt(var), rel=1e-6)
    # ES and GRPO not separated: unbounded
    assert not fieller_position(h, [0.1, 2.0, -2.0], [0.0, 0.5, -0.5]).defined


def test_permutation_p_is_exact():
    p, splits = permutation_p([5, 6, 7], [1, 2, 3], lambda a, b: sum(a) / 3 - sum(b) / 3)
    assert splits == 20 and p == pytest.approx(1 / 20)
    p, _ = permutation_p([1, 2, 3], [5, 6, 7], lambda a, b: sum(a) / 3 - sum(b) / 3)
    assert p == 1.0


def test_holm_matches_the_definition():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_three_way_reading():
    iv = t_interval([1.0, 1.2, 0.9, 1.1])
    assert read(iv, 0.0, 0.5).verdict == HOLDS and read(iv, 2.0, 0.5).verdict == FAILS
    wide = t_interval([-10.0, 10.0, 0.0])
    r = read(wide, 0.0, 1.0)
    assert r.verdict == UNDERPOWERED and r.needed and r.needed > 3
    assert "underpowered" in r.note("seeds")
    near = t_interval([0.1, -0.1, 0.05, 0.0, 0.02])  # across the line but inside ±margin on a side
    assert read(near, 0.0, 0.2).verdict == UNSURE
    # equivalence: inside ±m holds; outside fails; wider than the band is underpowered
    assert read_equivalence(t_interval([0.1, -0.1, 0.0, 0.05]), 1.0).verdict == HOLDS
    assert read_equivalence(t_interval([5.0, 5.2, 4.9]), 1.0).verdict == FAILS
    assert read_equivalence(wide, 1.0).verdict == UNDERPOWERED
    assert combine([HOLDS, HOLDS]) == HOLDS and combine([HOLDS, FAILS]) == FAILS and combine([HOLDS, UNSURE]) == UNSURE


def test_needed_n_gives_the_half_width():
    n = needed_n(10.0, 2.0)
    assert t_quantile(n - 1) * 10.0 / math.sqrt(n) <= 2.0 < t_quantile(n - 2) * 10.0 / math.sqrt(n - 1)


def test_needed_n_for_80_percent_power_matches_the_noncentral_t():
    """The power form resolves an effect of one margin with ≈ 80% probability (checked with the noncentral t)."""
    sd, margin = 10.0, 2.0
    n = needed_n(sd, margin, power=0.8)
    assert n > needed_n(sd, margin)
    crit = sps.t.ppf(0.975, n - 1)
    power = 1 - sps.nct.cdf(crit, n - 1, margin / (sd / math.sqrt(n)))  # P(reject | true effect = margin)
    assert 0.79 < power < 0.83
    prev = n - 1
    assert 1 - sps.nct.cdf(sps.t.ppf(0.975, prev - 1), prev - 1, margin / (sd / math.sqrt(prev))) < 0.81


def test_no_spread_and_one_value_give_no_interval_and_no_confident_verdict():
    from evotune.stats import diff_interval, mean_std

    assert math.isnan(mean_std([3.0])[1])  # one value: its spread is unknown, not 0
    flat = t_interval([0.0, 0.0, 0.0])
    assert not flat.defined and flat.zero_spread and "zero spread" in flat.text()
    r = read(flat, -1.0, 0.5)  # three at 0 is not proof that the mean is above −1: the sign test's p is 0.25
    assert r.verdict == UNDERPOWERED and "zero spread over 3 seeds, exact test p = 0.25" in r.note("seeds")
    assert read(flat, 0.0, 0.5).verdict == UNSURE  # on the line itself: nothing to test
    many = read(t_interval([1.0] * 40, correction=4), 0.0, 0.05)  # 40 of 40 on one side decides, even corrected
    assert many.verdict == HOLDS and "exact test p = 1.8e-12" in many.note("prompts")
    both = welch_interval([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])  # the exact rank-sum test: p = 2/C(6,3) = 0.1
    assert not both.defined and both.exact_p == pytest.approx(0.1) and read(both, 0.0, 0.5).verdict == UNDERPOWERED
    assert read_equivalence(welch_interval([0.0] * 6, [0.0] * 6), 5.0).verdict == HOLDS
    one = t_interval([2.0])
    assert read(one, 0.0, 1.0).verdict == UNDERPOWERED and "too few seeds" in read(one, 0.0, 1.0).note("seeds")
    # a corrected interval's SE is recovered with its own quantile, not the uncorrected one
    a, b = t_interval([1.0, 2.0, 4.0, 3.5], correction=4), t_interval([0.0, 0.5, 1.5, 0.2])
    d = diff_interval(a, b)
    se = math.sqrt(sps.sem([1.0, 2.0, 4.0, 3.5]) ** 2 + sps.sem([0.0, 0.5, 1.5, 0.2]) ** 2)
    assert d.half / sps.t.ppf(0.975, d.df) == pytest.approx(se, rel=1e-9)


def test_pass_at_k_is_the_human_eval_estimator():
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))


def test_barrier_items_picks_the_largest_interior_mean():
    lams = [0.0, 0.5, 1.0]
    lam, gaps = barrier_items(lams, [[1.0, 1.0], [0.0, 0.5], [1.0, 1.0]])
    assert lam == 0.5 and gaps == [1.0, 0.5]


def test_stats_module_needs_no_torch():
    code = "import sys, evotune.stats as s; s.t_interval([1.0, 2.0, 3.0]); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_jackknife_pair_mean_treats_the_seed_as_the_replicate():
    from evotune.stats import jackknife_pair_mean

    c = {("a", "b"): 0.1, ("a", "c"): 0.3, ("b", "c"): 0.2}
    iv = jackknife_pair_mean(["a", "b", "c"], lambda x, y: c[(x, y)])
    assert iv.mean == pytest.approx(0.2) and iv.df == 2
    # leave-one-out means are the single remaining pairs: 0.2, 0.3, 0.1 → jackknife SE = sqrt(2/3 · 0.02)
    se = math.sqrt(2 / 3 * 0.02)
    assert iv.hi - iv.mean == pytest.approx(t_quantile(2) * se)
    # wider than the naive interval over 3 (dependent) pairs
    naive = t_interval(list(c.values()))
    assert iv.hi - iv.lo > naive.hi - naive.lo


def test_shared_fraction():
    from evotune.stats import shared_fraction

    assert shared_fraction([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]) == pytest.approx(1.0)
    assert shared_fraction([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.0)


def test_paired_permutation_swaps_only_within_pairs():
    from evotune.stats import paired_permutation_p

    def diff(a, b):
        return sum(a) / len(a) - sum(b) / len(b)

    p, arrangements = paired_permutation_p([5.0, 6.0, 7.0], [1.0, 2.0, 3.0], diff)
    assert arrangements == 8 and p == pytest.approx(1 / 8)  # only the observed arrangement is as large
    p2, _ = paired_permutation_p([5.0, 2.5, 7.0], [1.0, 3.0, 3.0], diff)
    # swaps of pair 2 (|Δ| = 0.5) keep the sum ≥ observed only in the observed and pair-2-swapped arrangements
    assert p2 == pytest.approx(2 / 8)
    assert paired_permutation_p([1.0] * 5, [0.0] * 5, diff)[0] == pytest.approx(1 / 32)
    with pytest.raises(ValueError, match="needs pairs"):
        paired_permutation_p([1.0], [1.0, 2.0], diff)
