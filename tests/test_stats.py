"""The statistical deciders on synthetic paired outcomes with known differences: statuses, the
interval's coverage against its stated level (an exact binomial test), multiplicity, power."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from amdm_geom.core import stats


def correlated(n, p_a, p_b, rho_u, rng):
    """Paired 0/1 outcomes with success probabilities p_a, p_b from a shared uniform (common
    random numbers): a = U < p_a, b = V < p_b, V = U with probability rho_u, else fresh."""
    u = rng.random(n)
    v = np.where(rng.random(n) < rho_u, u, rng.random(n))
    return (u < p_a).astype(float), (v < p_b).astype(float)


def test_the_interval_is_the_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.8, 1.0, 30)
    p = stats.paired_interval(a, b, 0.9)
    # independently: scipy's one-sample t confidence interval of the differences
    lo, hi = sps.ttest_1samp(a - b, 0.0).confidence_interval(0.9)
    assert p.interval == pytest.approx((lo, hi), rel=1e-12) and p.n == 30 and p.level == 0.9
    assert p.mean == pytest.approx(float(np.mean(a - b))) and p.sd == pytest.approx(float(np.std(a - b, ddof=1)))


def test_equal_differences_give_the_exact_binomial_bound():
    a = np.array([1.0, 0.0] * 8)
    p = stats.paired_interval(a, a.copy(), 0.95, value_range=(0.0, 1.0))
    # no differing pair in 16: the differing rate is at most the Clopper-Pearson upper bound
    upper = sps.binomtest(0, 16).proportion_ci(0.95).high
    assert p.mean == 0.0 and p.interval == pytest.approx((-upper, upper), rel=1e-12)
    assert stats.decide(p.interval) == "inconclusive"  # 16 ties do not show the arms are equal
    assert stats.paired_interval(a, a.copy()).interval == (0.0, 0.0)  # without a range: the point


@pytest.mark.parametrize(("p_b", "expected"), [(0.5, "inconclusive"), (0.47, "inconclusive"), (0.2, "holds"),
                                               (0.8, "violated")])
def test_statuses_follow_the_known_difference(p_b, expected):
    # a large sample: zero and small true differences stay inside the noise, large ones are decided
    rng = np.random.default_rng(1)
    a, b = correlated(400, 0.5, p_b, 0.5, rng)
    p = stats.paired_interval(a, b)
    assert stats.decide(p.interval) == expected
    assert stats.decide(p.interval, direction="<") == {"holds": "violated", "violated": "holds"}.get(
        expected, expected)


def test_the_deciders_on_intervals():
    assert stats.decide((0.01, 0.2)) == "holds" and stats.decide((-0.2, -0.01)) == "violated"
    assert stats.decide((-0.01, 0.2)) == "inconclusive" and stats.decide((0.0, 0.0)) == "violated"
    assert stats.decide((0.01, 0.2), margin=0.05) == "inconclusive"
    assert stats.decide((math.nan, 1.0)) == "inconclusive"
    assert stats.decide_equivalence((-0.02, 0.03), 0.05) == "holds"
    assert stats.decide_equivalence((0.06, 0.2), 0.05) == "violated"
    assert stats.decide_equivalence((-0.2, -0.06), 0.05) == "violated"
    assert stats.decide_equivalence((0.0, 0.1), 0.05) == "inconclusive"
    with pytest.raises(ValueError, match="direction"):
        stats.decide((0, 1), direction=">=")


@pytest.mark.parametrize(("n", "p_a", "p_b"), [(48, 0.3, 0.3), (96, 0.4, 0.3), (200, 0.5, 0.45)])
def test_coverage_is_the_stated_level(n, p_a, p_b):
    rng = np.random.default_rng(2 + n)
    reps, level = 2000, 0.95
    truth = p_a - p_b
    covered = 0
    for _ in range(reps):
        a, b = correlated(n, p_a, p_b, 0.6, rng)
        lo, hi = stats.paired_interval(a, b, level, value_range=(0.0, 1.0)).interval
        covered += lo <= truth <= hi
    # an exact binomial test of "coverage = level" at the 0.1% level (and never far below it)
    assert sps.binomtest(covered, reps, level).pvalue > 1e-3, covered / reps
    assert covered / reps > level - 0.02


def test_best_of_k_under_the_null_holds_at_most_alpha():
    rng = np.random.default_rng(3)
    reps, k, n, level = 2000, 4, 60, 0.95
    holds = 0
    for _ in range(reps):
        u = rng.random(n)
        arms = {f"arm{i}": (np.where(rng.random(n) < 0.5, u, rng.random(n)) < 0.4).astype(float) for i in range(k)}
        holds += stats.best_of(arms, "arm0", level, value_range=(0.0, 1.0)).status == "holds"
    # the bound is alpha / 2; test it exactly: the holds count is not significantly above it
    assert sps.binomtest(holds, reps, (1 - level) / 2, alternative="greater").pvalue > 1e-3, holds / reps


def test_best_of_k_statuses():
    rng = np.random.default_rng(4)
    n = 500
    u = rng.random(n)
    arm = lambda p: (np.where(rng.random(n) < 0.7, u, rng.random(n)) < p).astype(float)  # noqa: E731
    best = stats.best_of({"a": arm(0.6), "b": arm(0.3), "c": arm(0.35)}, "a")
    assert best.status == "holds" and best.deciding == "c" and best.per_level == pytest.approx(0.975)
    assert best.value == pytest.approx(float(best.comparisons["c"].mean)) and best.n == n
    # the deciding rival's interval agrees with the status, whichever rival has the smallest mean
    mixed = stats.best_of({"a": arm(0.5), "b": arm(0.5), "c": arm(0.8)}, "a")
    assert mixed.status == "violated" and mixed.deciding == "c"
    assert stats.decide(mixed.comparisons["c"].interval) == "violated"
    assert "Bonferroni over 2" in best.test
    assert stats.best_of({"a": arm(0.3), "b": arm(0.6), "c": arm(0.3)}, "a").status == "violated"
    assert stats.best_of({"a": arm(0.5), "b": arm(0.3), "c": arm(0.5)}, "a").status == "inconclusive"
    with pytest.raises(ValueError, match="rival"):
        stats.best_of({"a": arm(0.5)}, "a")


def test_n_to_resolve_gives_the_stated_power():
    sd, delta = 0.5, 0.05
    n = stats.n_to_resolve(sd, delta)
    # the formula, independently: two-sided 5% z test, power 0.8 -> (1.95996 + 0.84162)^2 (sd / delta)^2
    assert n == math.ceil((2.8015852 * sd / delta) ** 2)
    assert stats.n_to_resolve(sd, delta, comparisons=4) > n and stats.n_to_resolve(math.nan) == 0
    # and by simulation: normal differences of mean delta and sd at that n are decided ~80% of the time
    rng = np.random.default_rng(5)
    d = rng.normal(delta, sd, (2000, n))
    decided = sum(stats.decide(stats.paired_interval(x, np.zeros(n)).interval) == "holds" for x in d)
    assert sps.binomtest(decided, 2000, 0.8).pvalue > 1e-3, decided / 2000


def test_interval_text():
    p = stats.Paired(0.031, (-0.012, 0.074), 0.1, 48, 0.95, "t")
    assert stats.interval_text(p) == "+0.031 [-0.012, +0.074] (95%, n = 48)"


def test_power_at_is_the_converse_of_n_to_resolve_and_matches_simulation():
    sd, delta = 0.4, 0.05
    n = stats.n_to_resolve(sd, delta, comparisons=3)
    assert stats.power_at(n, sd, delta, comparisons=3) >= 0.8 > stats.power_at(n - 5, sd, delta, comparisons=3)
    assert stats.power_at(10, 0.0) == 1.0 and math.isnan(stats.power_at(1, 0.3))
    # simulation: Bonferroni (3 intervals) t intervals on normal differences at n = 150 exclude 0 at this rate
    rng = np.random.default_rng(11)
    n = 150
    level = 1 - 0.05 / 3
    d = rng.normal(delta, sd, (2000, n))
    decided = sum(stats.decide(stats.paired_interval(x, np.zeros(n), level).interval) == "holds" for x in d)
    expected = stats.power_at(n, sd, delta, comparisons=3)
    assert 0.1 < expected < 0.9 and sps.binomtest(decided, 2000, expected).pvalue > 1e-3, (decided / 2000, expected)
