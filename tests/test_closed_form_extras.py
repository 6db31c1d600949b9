"""The closed-form checks added to ``closed_forms`` (issue 24): Lemma A.1's eqs. (10)-(13)
(``chernoff``), App. E's score-combination reading (``app_e``) and sigma_t before eq. (23)
(``eq23_sigma``). Each verdict's number against an independent computation (mpmath's incomplete
gamma function, vectors aggregated by ``geometry.slerp`` / ``lerp`` and solved for their weights,
diffusers' own variance), and each status against a case built to decide it."""

import math

import mpmath
import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

from amdm_geom.analyses.checks import app_e, chernoff, eq23_sigma
from amdm_geom.core import geometry, schedules
from tests.recompute_closed_form_extras import RECOMPUTE

mpmath.mp.dps = 40


@pytest.fixture(scope="module")
def cds():
    return chernoff.dataset()


@pytest.fixture(scope="module")
def ads():
    return app_e.dataset()


@pytest.fixture(scope="module")
def eds():
    return eq23_sigma.dataset()


def rows_of(verdicts):
    return {v.key: v for v in verdicts}


# --------------------------------------------------------------------------------------------
# Lemma A.1, eqs. (10)-(13)


def _mp_log_tail(n, x, upper):
    """ln P(chi2_n >= x) (upper) or ln P(chi2_n <= x), from mpmath's regularized incomplete gamma function."""
    a, b = (x / 2, mpmath.inf) if upper else (0, x / 2)
    return float(mpmath.log(mpmath.gammainc(mpmath.mpf(n) / 2, a, b, regularized=True)))


def test_elementary_inequalities_against_mpmath(cds):
    rows = rows_of(chernoff.verdicts(cds))
    for key, dim, f in (("lemma_a1_ln_upper", "chernoff_ineq_upper",
                         lambda d: mpmath.log1p(d) - (2 + d) * d / (2 * (1 + d))),
                        ("lemma_a1_ln_lower", "chernoff_ineq_lower", lambda d: mpmath.log1p(-d) + d + d**2 / 2)):
        exact = [float(f(mpmath.mpf(float(d)))) for d in cds[dim].values]
        assert max(exact) < 0  # strict on the whole grid (0 excluded)
        # the float64 value carries the rounding of two numbers ~1e-6 apart by ~1e-19: a few in 1e3
        assert rows[key].value == pytest.approx(max(exact), rel=5e-3)
        assert rows[key].status == "holds" and rows[key].family == "lemma-a1" and rows[key].kind == "paper claim"
    # near 0 the gaps are -d^3/6 and -d^3/3
    assert rows["lemma_a1_ln_upper"].value == pytest.approx(-(1e-6) ** 3 / 6, rel=5e-3)
    assert rows["lemma_a1_ln_lower"].value == pytest.approx(-(1e-6) ** 3 / 3, rel=5e-3)


def test_a_false_inequality_is_violated(cds):
    d = cds.chernoff_ineq_upper
    wrong = cds.assign(chernoff_ln_upper_rhs=d - d**2 / 2)  # ln(1 + d) >= d - d^2/2: the reverse holds
    row = rows_of(chernoff.verdicts(wrong))["lemma_a1_ln_upper"]
    assert row.status == "violated" and row.value > 0


@pytest.mark.parametrize("key,log_exact,log_bound,dim,upper", [
    ("lemma_a1_eq10", "chernoff_log_sf", "chernoff_log_eq10", "chernoff_d_upper", True),
    ("lemma_a1_eq11", "chernoff_log_cdf", "chernoff_log_eq11", "chernoff_d_lower", False)])
def test_chernoff_tails_against_mpmath(cds, key, log_exact, log_bound, dim, upper):
    n, d = np.meshgrid(cds.chernoff_n.values, cds[dim].values, indexing="ij")
    x = (1 + d) * n if upper else (1 - d) * n
    exact = np.array([_mp_log_tail(int(k), mpmath.mpf(float(v)), upper) for k, v in zip(n.ravel(), x.ravel())])
    exact = exact.reshape(n.shape)
    # the bound as a product: ((1 + d) e^{-d})^{n/2} and ((1 - d) e^{d})^{n/2}
    bound = n / 2 * (np.log(1 + d) - d) if upper else n / 2 * (np.log(1 - d) + d)
    assert (exact < bound).all()  # every cell, also those float64 does not resolve
    resolved = np.isfinite(cds[log_exact].values)
    assert resolved.sum() > 0.9 * resolved.size and (exact[~resolved] < -700).all()
    np.testing.assert_allclose(cds[log_exact].values[resolved], exact[resolved], rtol=1e-9)
    np.testing.assert_allclose(cds[log_bound].values, bound, rtol=1e-12)
    row = rows_of(chernoff.verdicts(cds))[key]
    assert row.value == pytest.approx((exact - bound)[resolved].max(), rel=1e-9)
    assert row.status == "holds" and row.n == int(resolved.sum())


def test_a_bound_below_the_exact_tail_is_violated_and_none_resolved_is_inconclusive(cds):
    just_below = cds.assign(chernoff_log_eq10=cds.chernoff_log_sf.fillna(0.0) - 1e-3)
    assert rows_of(chernoff.verdicts(just_below))["lemma_a1_eq10"].status == "violated"
    just_above = cds.assign(chernoff_log_eq10=cds.chernoff_log_sf + 1e-3)
    assert rows_of(chernoff.verdicts(just_above))["lemma_a1_eq10"].status == "holds"
    unresolved = cds.assign(chernoff_log_cdf=cds.chernoff_log_cdf * np.nan)
    row = rows_of(chernoff.verdicts(unresolved))["lemma_a1_eq11"]
    assert row.status == "inconclusive" and row.n == 0


def test_eq12_eq13_chains_against_mpmath(cds):
    rows = rows_of(chernoff.verdicts(cds))
    n_grid = cds.chernoff_n.values
    sf = cds.chernoff_log_sf.values

    def steps12(n, d):
        return [n / 2 * (mpmath.log1p(d) - d) + n * d**2 / (4 * (1 + d))]  # ln (10) / (12)

    def steps13(n, d):
        return [n / 2 * (mpmath.log1p(-d) + d) + n * d**2 / 4,  # ln (11) / e^{-nd^2/4}
                -n * d**2 / 4 + n * d**2 / (4 * (1 + d))]  # ln e^{-nd^2/4} / e^{-nd^2/(4(1+d))}

    for key, dim, steps in (("lemma_a1_eq12", "chernoff_d_upper", steps12),
                            ("lemma_a1_eq13", "chernoff_d_lower", steps13)):
        worst = max(float(s) for n in n_grid for d in cds[dim].values for s in steps(mpmath.mpf(int(n)),
                                                                                      mpmath.mpf(float(d))))
        # the chain's first step, the exact tail against (10)/(11) (above: ln ratio < -0.4), is never the closest
        assert -1e-6 < worst < 0
        assert rows[key].value == pytest.approx(worst, rel=1e-6)
        assert rows[key].status == "holds"
    assert np.isnan(sf).any()  # (the grid reaches tails float64 cannot resolve)
    # a chain member below the one before it
    wrong = cds.assign(chernoff_log_eq13=cds.chernoff_log_eq13_mid - 1e-6)
    assert rows_of(chernoff.verdicts(wrong))["lemma_a1_eq13"].status == "violated"


# --------------------------------------------------------------------------------------------
# App. E


def _weights(z, a, b):
    """The coefficients c with z = c_1 a + c_2 b (least squares, per sample)."""
    basis = torch.stack([a, b], dim=2)  # (B, n, 2)
    return torch.linalg.lstsq(basis, z.unsqueeze(2)).solution.squeeze(2)


def _pairs(phi, n=8, seed=0):
    """Unit vectors a, b in R^n at angle phi (one pair per angle), randomly oriented."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(phi), n, n, generator=g, dtype=torch.float64))
    phi = torch.tensor(np.array(phi, dtype=np.float64))
    return q[:, :, 0], torch.cos(phi)[:, None] * q[:, :, 0] + torch.sin(phi)[:, None] * q[:, :, 1]


def test_slerp_weight_sum_from_vectors(ads):
    phi, w = np.meshgrid(ads.appe_phi.values[::7], ads.appe_w.values[::4], indexing="ij")
    a, b = _pairs(phi.ravel())
    c = _weights(geometry.slerp(a, b, torch.from_numpy(w.ravel())), a, b)
    got = c.sum(1).numpy().reshape(phi.shape)
    np.testing.assert_allclose(ads.appe_slerp_sum.values[::7, ::4], got, rtol=1e-10)
    # the brief's numbers at w = 1/2: 1 / cos(phi / 2)
    a, b = _pairs([0.47, math.pi / 2])
    s = _weights(geometry.slerp(a, b, 0.5), a, b).sum(1).numpy()
    assert s == pytest.approx([1.028, 1.414], abs=5e-4)
    assert s == pytest.approx(1 / np.cos(np.array([0.47, math.pi / 2]) / 2), rel=1e-10)


def test_slerp_verdict_at_the_papers_table5_angles(ads):
    from amdm_geom.analyses.prop31.table5 import paper_table5

    paper = paper_table5()
    rows = [50 - 1 - k for k in range(20)]  # T = 50, s = 20: the samples of aggregation steps k = 0..19
    phi = paper.loc[rows, "phi"].to_numpy()
    assert phi[0] == pytest.approx(1.5791) and phi[1:].max() == pytest.approx(0.0312)
    a, b = _pairs(phi)
    s = _weights(geometry.slerp(a, b, 0.5), a, b).sum(1).numpy()  # w = 0.5 (App. F.2)
    row = rows_of(app_e.verdicts(ads))["appe_slerp_is_score_combination"]
    assert row.value == pytest.approx(s.max() - 1, rel=1e-9) and row.value == pytest.approx(0.4201, abs=1e-4)
    assert row.status == "violated" and row.family == "app-e"
    assert f"{s[1:].max() - 1:.2e}" in row.detail  # the steps from an aggregate: S - 1 ~ 1.2e-4


def test_lerp_weights_from_vectors_sum_to_one(ads):
    w = ads.appe_w.values
    a, b = _pairs(np.full(len(w), 0.8))
    s = _weights(geometry.lerp(a, b, torch.tensor(w.copy())), a, b).sum(1).numpy()
    assert np.abs(s - 1).max() < 1e-14
    row = rows_of(app_e.verdicts(ads))["appe_lerp_is_score_combination"]
    assert row.status == "holds" and row.value <= 1e-15 and row.family == "app-e"


def test_slerp_holds_where_every_weight_pair_sums_to_one(ads):
    ends = ads.sel(appe_w=[0.0, 1.0])  # w = 0 or 1: slerp returns one input
    flat = ends.assign(appe_table5_phi=ends.appe_table5_phi * 0,
                       appe_table5_slerp_sum=("appe_t", app_e.slerp_weight_sum(np.zeros(ends.sizes["appe_t"]), 0.5)))
    assert rows_of(app_e.verdicts(flat))["appe_slerp_is_score_combination"].status == "holds"
    off = ads.assign(appe_lerp_sum=ads.appe_lerp_sum + 1e-9)  # weights that do not sum to 1
    assert rows_of(app_e.verdicts(off))["appe_lerp_is_score_combination"].status == "violated"


# --------------------------------------------------------------------------------------------
# sigma_t before eq. (23)


def test_sigma_against_diffusers_variance(eds):
    sched = schedules.make_scheduler()
    sched.set_timesteps(50)
    t = sched.timesteps.numpy()
    ratio = sched.config.num_train_timesteps // 50
    want = np.array([math.sqrt(float(sched._get_variance(int(k), int(k) - ratio))) for k in t])  # eta = 1
    np.testing.assert_array_equal(eds.eq23_t.values, t)
    np.testing.assert_allclose(eds.eq23_sigma.values, want, rtol=2e-5)  # diffusers' alphas_cumprod is float32
    row = rows_of(eq23_sigma.verdicts(eds))["prop31_eq23_sigma_printed"]
    assert row.value == pytest.approx(want.max(), rel=2e-5) and row.value == pytest.approx(0.4545, abs=1e-4)
    assert row.status == "violated" and row.family == "prop31" and "holds at 0/50" in row.measured


def test_chi_interval_and_a_monte_carlo_draw(eds):
    n = int(eds.eq23_n)
    lo, hi = np.sqrt(stats.chi2.ppf([0.005, 0.995], n) / n)  # |xi1 - xi2|^2 / 2 ~ chi2_n
    assert float(eds.eq23_ratio_lo) == pytest.approx(lo, rel=1e-10)
    assert float(eds.eq23_ratio_hi) == pytest.approx(hi, rel=1e-10)
    assert float(eds.eq23_ratio_median) == pytest.approx(math.sqrt(stats.chi2.median(n) / n), rel=1e-10)
    g = torch.Generator().manual_seed(3)
    xi = torch.randn(2, 300, n, generator=g, dtype=torch.float64)
    r = ((xi[0] - xi[1]).norm(dim=1) / math.sqrt(2 * n)).numpy()
    assert ((r >= lo) & (r <= hi)).mean() >= 0.95 and abs(np.median(r) - 1) < 3e-3


def test_sigma_one_steps_decide_the_printed_sentence(eds):
    ones = eds.assign(eq23_sigma=eds.eq23_sigma * 0 + 1.0)
    assert rows_of(eq23_sigma.verdicts(ones))["prop31_eq23_sigma_printed"].status == "holds"
    one_step = eds.assign(eq23_sigma=eds.eq23_sigma.where(eds.eq23_step != 0, 1.0))
    row = rows_of(eq23_sigma.verdicts(one_step))["prop31_eq23_sigma_printed"]
    assert row.status == "violated" and "holds at 1/50" in row.measured
    zero = eq23_sigma.dataset(eta=0.0)  # deterministic DDIM: sigma_t = 0 everywhere
    assert rows_of(eq23_sigma.verdicts(zero))["prop31_eq23_sigma_printed"].status == "violated"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        eq23_sigma.dataset(0)
    with pytest.raises(ValueError, match="linear or scaled_linear"):
        eq23_sigma.dataset(scheduler=schedules.make_scheduler("cosine"))
    with pytest.raises(ValueError, match="eta must be"):
        eq23_sigma.dataset(eta=-1.0)


# --------------------------------------------------------------------------------------------
# the recomputations validate uses


def test_recomputations_match_the_verdicts(tmp_path, cds, ads, eds):
    ds = xr.merge([cds, ads, eds], combine_attrs="override")
    (tmp_path / "closed_forms").mkdir()
    ds.to_zarr(tmp_path / "closed_forms" / "results.zarr", consolidated=False)
    run = type("Run", (), {"report": tmp_path})()
    rows = rows_of(chernoff.verdicts(ds) + app_e.verdicts(ds) + eq23_sigma.verdicts(ds))
    assert set(RECOMPUTE) == set(rows)
    for key, fn in RECOMPUTE.items():
        got = fn(run, key)
        assert math.isclose(rows[key].value, got, rel_tol=1e-5, abs_tol=1e-9), (key, rows[key].value, got)
