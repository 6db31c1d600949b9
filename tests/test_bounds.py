"""Each bound of amdm_geom.core.bounds against the exact quantity it bounds.

Exact quantities come from independent computations: numpy norms and angles, scipy's
chi-square law (the bounds module uses the chi law), and Monte Carlo. Where the paper's
inequality fails, the failing region is pinned down exactly; no tolerance is widened to hide it.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from amdm_geom.core import bounds
from amdm_geom.core import geometry as geo
from tests.reference import ref_angle, ref_norm

seeds = st.integers(0, 2**32 - 1)


def latents(seed, batch=6, n=64):
    """Random and adversarial pairs: generic, near-parallel, parallel, orthogonal, wildly
    different norms, obtuse."""
    g = np.random.default_rng(seed)
    a = g.standard_normal((batch, n)) * g.uniform(0.1, 10, (batch, 1))
    b = g.standard_normal((batch, n)) * g.uniform(0.1, 10, (batch, 1))
    b[1] = a[1] * 1.3 + 1e-6 * g.standard_normal(n)  # near-parallel
    b[2] = 0.2 * a[2]  # parallel
    b[3] -= (b[3] @ a[3]) / (a[3] @ a[3]) * a[3]  # orthogonal
    b[4] = -0.5 * a[4] + 0.1 * g.standard_normal(n)  # obtuse
    return torch.from_numpy(a), torch.from_numpy(b)


# ------------------------------------------------------------------------------------ Prop. 3.1


@given(seed=seeds, n=st.sampled_from([2, 3, 64, 4096]))
def test_norm_gap_bound_holds_for_every_pair(seed, n):
    a, b = latents(seed, n=n)
    gap = np.abs(ref_norm(a) - ref_norm(b))
    bound = bounds.norm_gap_bound(a, b).numpy()
    assert np.all(gap <= bound * (1 + 1e-12) + 1e-12)
    # the right-hand side is |a + b| / (|a| + |b|) * |a - b| (eqs. 17-18), another formula
    alt = ref_norm(a + b) / (ref_norm(a) + ref_norm(b)) * ref_norm(a - b)
    np.testing.assert_allclose(bound, alt, rtol=1e-10)


def test_norm_gap_bound_is_tight_for_parallel_pairs_and_handles_zeros():
    a = torch.randn(2, 16, dtype=torch.float64)
    b = a * torch.tensor([[0.25], [3.0]], dtype=torch.float64)
    np.testing.assert_allclose(bounds.norm_gap_bound(a, b), np.abs(ref_norm(a) - ref_norm(b)), rtol=1e-12)
    z = torch.zeros(1, 16, dtype=torch.float64)
    assert bounds.norm_gap_bound(z, a[:1]).item() == pytest.approx(ref_norm(a[:1])[0])
    assert bounds.norm_gap_bound(z, z).item() == 0.0


@given(seed=seeds)
def test_cos_angle_bound_holds_on_its_domain(seed):
    a, b = latents(seed)
    cos = np.cos(ref_angle(a, b))
    bound = bounds.cos_angle_lower_bound(a, b).numpy()
    defined = ~np.isnan(bound)
    assert np.all(cos[defined] >= bound[defined] - 1e-12)
    # NaN exactly off the domain cos phi >= 0 (up to rounding at phi = pi/2)
    assert np.all(cos[~defined] < 1e-12) and np.all(defined[cos > 1e-12])


@given(seed=seeds, ratio=st.floats(0.05, 20.0), phi=st.floats(0.01, math.pi - 0.01))
def test_cos_angle_bound_fails_exactly_for_obtuse_pairs_of_unequal_norm(seed, ratio, phi):
    # two vectors at a known angle phi with norms 1 and ratio, in a random 2-plane
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.standard_normal((32, 2)))
    a = torch.from_numpy(q[:, 0][None])
    b = torch.from_numpy((ratio * (math.cos(phi) * q[:, 0] + math.sin(phi) * q[:, 1]))[None])
    printed = bounds.cos_angle_lower_bound(a, b, strict=False).item()
    excess = printed - math.cos(phi)  # > 0 means the printed inequality is false
    # cos phi - bound = 2<a,b> (|a|-|b|)^2 / (2|a||b| (|a|^2+|b|^2)), so it fails iff obtuse and
    # the norms differ
    expected = -2 * ratio * math.cos(phi) * (1 - ratio) ** 2 / (2 * ratio * (1 + ratio**2))
    assert excess == pytest.approx(expected, abs=1e-12)
    if phi > math.pi / 2 + 1e-6 and abs(ratio - 1) > 1e-3:
        assert excess > 0
        assert math.isnan(bounds.cos_angle_lower_bound(a, b).item())
    if phi < math.pi / 2 - 1e-6:
        assert excess <= 1e-12


def test_delta_bound_covers_the_epsilon_part_exactly_when_sigma_is_zero():
    g = np.random.default_rng(3)
    n, B_t = 4096, -0.23
    e1, e2 = g.standard_normal(n), g.standard_normal(n)
    cond, func = 0.7 * np.linalg.norm(e1 - e2), 0.3 * np.linalg.norm(e1 - e2)
    # Lipschitz pieces that add up to the actual epsilon difference (eq. 21 with equality)
    delta = abs(B_t) * np.linalg.norm(e1 - e2)
    assert delta <= bounds.delta_bound(B_t, 1.0, cond, func, 0.0, n) + 1e-12
    assert bounds.delta_bound(B_t, 1.0, cond, func, 0.0, n) == pytest.approx(delta, rel=1e-12)


@pytest.mark.parametrize("n", [2, 64, 4096])
def test_delta_bound_noise_term_covers_only_about_half_the_draws(n):
    # Pure noise (B_t = 0): delta = sigma |xi1 - xi2|. The paper's sigma sqrt(2n) is a typical
    # size, not a bound: Monte Carlo coverage equals P(chi2_n <= n), about 1/2.
    g = np.random.default_rng(n)
    draws = 4000
    d = np.linalg.norm(g.standard_normal((draws, n)) - g.standard_normal((draws, n)), axis=1)
    covered = np.mean(d <= bounds.delta_bound(0.0, 0.0, 0.0, 0.0, 1.0, n))
    p = stats.chi2.cdf(n, n)
    assert bounds.delta_noise_coverage(n) == pytest.approx(p, rel=1e-12)
    assert abs(covered - p) < 5 * math.sqrt(p * (1 - p) / draws)
    assert covered < 0.7  # the printed "bound" is exceeded in a large share of draws
    # with a quantile, it covers that share
    q = 0.99
    covered_q = np.mean(d <= bounds.delta_bound(0.0, 0.0, 0.0, 0.0, 1.0, n, noise_quantile=q))
    assert abs(covered_q - q) < 5 * math.sqrt(q * (1 - q) / draws)


# ------------------------------------------------------------------------------------ Lemma A.1

N_GRID = [1, 2, 3, 4, 8, 16, 64, 256, 1024, 4096, 16384]
EPS_GRID = np.concatenate([[0.0], np.logspace(-4, 0.7, 120)])


def exact_miss_chi2(n, eps):
    """P(| |X| - sqrt n | > eps sqrt n) for X ~ N(0, I_n), via the chi-square law of |X|^2."""
    hi = stats.chi2.sf(((1 + eps) ** 2) * n, n)
    lo = stats.chi2.cdf(((1 - eps) ** 2) * n, n) if eps < 1 else 0.0
    return hi + lo


@pytest.mark.parametrize("n", N_GRID)
def test_lemma_a1_bound_below_the_exact_chi_law_on_the_grid(n):
    for eps in EPS_GRID:
        miss = exact_miss_chi2(n, eps)
        assert bounds.shell_miss_probability_exact(n, eps) == pytest.approx(miss, rel=1e-8, abs=1e-300)
        assert bounds.shell_miss_probability_bound(n, eps) >= miss
        assert bounds.shell_probability_lower_bound(n, eps) <= 1 - miss + 1e-15


@pytest.mark.parametrize("n", N_GRID)
def test_lemma_a1_each_tail_of_eqs_14_15_holds_although_step_15_is_wrong(n):
    # Step (15) claims {|X| <= (1 - d/2) sqrt n} is inside {|X| <= sqrt(1 - d) sqrt n}; it is
    # the other way round (sqrt(1 - d) <= 1 - d/2), so the printed chain does not prove the
    # lower tail. The lower-tail statement itself holds (exact Chernoff), as does the upper one.
    for eps in EPS_GRID[(EPS_GRID > 0) & (EPS_GRID < 1)]:
        d = 2 * eps
        if d < 1:
            assert math.sqrt(1 - d) < 1 - d / 2
            assert stats.chi2.cdf((1 - d) * n, n) <= stats.chi2.cdf((1 - eps) ** 2 * n, n)
        one_tail = math.exp(-n * eps**2 / (1 + 2 * eps))
        assert stats.chi2.sf((1 + eps) ** 2 * n, n) <= one_tail
        assert stats.chi2.cdf((1 - eps) ** 2 * n, n) <= one_tail


@given(n=st.integers(1, 20000), eps=st.floats(0.0, 5.0))
def test_lemma_a1_bound_holds_for_random_n_and_eps(n, eps):
    assert bounds.shell_miss_probability_bound(n, eps) >= exact_miss_chi2(n, eps) * (1 - 1e-9)


def test_lemma_a1_exact_against_monte_carlo():
    g = np.random.default_rng(7)
    for n, eps in [(2, 0.5), (64, 0.1), (4096, 0.01)]:
        r = np.linalg.norm(g.standard_normal((20000, n)), axis=1)
        freq = np.mean(np.abs(r - math.sqrt(n)) <= eps * math.sqrt(n))
        p = bounds.shell_probability_exact(n, eps)
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / 20000) + 1e-3


def test_lemma_a1_vectorised_over_kinds():
    n = np.array([[16], [16384]])
    eps = np.array([0.01, 0.1])
    out = bounds.shell_probability_lower_bound(n, eps)
    assert out.shape == (2, 2) and out[0, 0] < 0  # vacuous at small n eps^2, returned as is
    t = bounds.shell_probability_exact(torch.tensor([16.0, 64.0]), 0.1)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert isinstance(bounds.shell_probability_exact(16, 0.1), float)


# ------------------------------------------------------------------------------------ Prop. 3.2


@given(seed=seeds, n=st.sampled_from([8, 256, 4096]), w=st.floats(0.0, 1.0), eta=st.floats(0.0, 2.0))
def test_max_distance_bounds_the_shifted_point_for_equal_norms(seed, n, w, eta):
    g = np.random.default_rng(seed)
    z1 = g.standard_normal((1, n))
    z2 = g.standard_normal((1, n))
    z2 *= np.linalg.norm(z1) / np.linalg.norm(z2)
    mu = z1 + g.standard_normal((1, n))  # any mean; the shift moves by eta
    z1, z2, mu = (torch.from_numpy(v) for v in (z1, z2, mu))
    z_tilde = geo.radial_shift(geo.slerp(z1, z2, w), mu, eta)
    d = bounds.max_distance(ref_angle(z1, z2)[0], ref_norm(z1 - z2)[0], w, eta)
    assert ref_norm(z_tilde - z2)[0] <= d * (1 + 1e-10) + 1e-12


@given(seed=seeds, w=st.floats(0.01, 0.99), phi=st.floats(0.01, 3.1), log_ratio=st.floats(-3, 3))
def test_max_distance_fails_exactly_where_the_chord_identity_breaks(seed, w, phi, log_ratio):
    # |z1| = 1, |z2| = rho. In the plane, |z' - z2|^2 - phi_w^2 delta^2 = K (rho - 1)(rho - rho*)
    # with a = sin((1-w)phi)/sin phi, b = sin(w phi)/sin phi, K = (1-b)^2 - phi_w^2,
    # rho* = (a^2 - phi_w^2) / K. The eta = 0 bound d = phi_w delta is exceeded iff that is > 0:
    # always for |z2| slightly below |z1|, never for equal norms.
    rho = math.exp(log_ratio)
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.standard_normal((16, 2)))
    z1 = torch.from_numpy(q[:, 0][None])
    z2 = torch.from_numpy((rho * (math.cos(phi) * q[:, 0] + math.sin(phi) * q[:, 1]))[None])
    d = bounds.max_distance(phi, ref_norm(z1 - z2)[0], w, 0.0)
    excess = ref_norm(geo.slerp(z1, z2, w) - z2)[0] - d
    a, b = math.sin((1 - w) * phi) / math.sin(phi), math.sin(w * phi) / math.sin(phi)
    pw = math.sin((1 - w) * phi / 2) / math.sin(phi / 2)
    K = (1 - b) ** 2 - pw**2
    h = K * (rho - 1) * (rho - (a**2 - pw**2) / K)
    if abs(excess) > 1e-9:
        assert (excess > 0) == (h > 0)


def test_max_distance_domain_and_errors():
    assert math.isnan(bounds.max_distance(4.0, 1.0, 0.5, 0.3))
    assert bounds.max_distance(0.0, 2.0, 0.25, 0.3) == pytest.approx(0.75 * 2.0 + 0.3)
    with pytest.raises(ValueError, match=r"eta must be >= 0; got -1.0"):
        bounds.max_distance(0.1, 1.0, 0.5, -1.0)
    with pytest.raises(ValueError, match=r"w must be in \[0, 1\]; got 1.2"):
        bounds.max_distance(0.1, 1.0, 1.2, 0.3)


@pytest.mark.parametrize("n", [16, 1024, 16384])
def test_prop32_bound_below_the_exact_probability_of_its_event(n):
    for eps in [0.01, 0.05, 0.2]:
        for d in [0.0, 0.5, 2.0]:
            for sigma in [0.05, 0.5, 1.0]:
                e = eps - d / (sigma * math.sqrt(n))
                lb = bounds.prop32_lower_bound(n, eps, d, sigma)
                exact = bounds.prop32_probability_exact(n, eps, d, sigma)
                if e < 0:
                    assert math.isnan(lb) and math.isnan(exact)
                    continue
                assert exact == pytest.approx(1 - exact_miss_chi2(n, e), abs=1e-12)
                assert lb <= exact + 1e-15


def test_prop32_is_undefined_for_deterministic_steps():
    assert math.isnan(bounds.prop32_lower_bound(16384, 0.05, 0.0, 0.0))
    assert math.isnan(bounds.prop32_effective_eps(16384, 0.05, 1.0, 0.0))


def test_prop32_monte_carlo_worst_case_radial_offset():
    # z2 = mu2 + sigma xi; z~ at distance exactly d from z2, pushed radially outwards (the worst
    # direction). Membership of z~ in model 2's shell A(eps) must be at least the bound.
    g = np.random.default_rng(11)
    n, sigma, eps, d = 1024, 0.5, 0.1, 0.8
    xi = g.standard_normal((20000, n))
    r2 = sigma * np.linalg.norm(xi, axis=1)
    r_tilde = r2 + d
    inside = np.abs(r_tilde - sigma * math.sqrt(n)) <= eps * sigma * math.sqrt(n)
    assert inside.mean() >= bounds.prop32_lower_bound(n, eps, d, sigma)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: bounds.shell_probability_lower_bound(0, 0.1), r"n must be >= 1; got 0.0"),
        (lambda: bounds.shell_probability_exact(16, -0.1), r"eps must be >= 0; got -0.1"),
        (lambda: bounds.delta_bound(-0.2, -1.0, 1.0, 1.0, 0.1, 16), r"L_theta must be >= 0; got -1.0"),
        (lambda: bounds.delta_bound(-0.2, 1.0, 1.0, 1.0, 0.1, 16, noise_quantile=1.0),
         r"noise_quantile must be in \(0, 1\)"),
        (lambda: bounds.prop32_lower_bound(16, 0.1, -1.0, 0.1), r"d must be >= 0"),
        (lambda: bounds.norm_gap_bound(torch.ones(2, 3), torch.ones(2, 4)), r"same shape"),
    ],
)
def test_bounds_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
