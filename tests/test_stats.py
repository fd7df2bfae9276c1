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
