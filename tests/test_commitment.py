"""The commitment analysis (amdm_geom.analyses.commitment): exact posteriors against scipy, commitment times on
paths with a known answer, the intervals against their exact laws, the speciation time against the closed form of
two symmetric Gaussians, and a deciding case for each verdict."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import optimize, special
from scipy import stats as st

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.commitment import commitment as cm
from amdm_geom.analyses.commitment import speciation as sp
from amdm_geom.analyses.commitment import times
from amdm_geom.app.runner.output import save_result
from amdm_geom.core.schedules import make_scheduler
from amdm_geom.models.gmm import GaussianMixture, fine_grained_family
from amdm_geom.sampling import AMDMSampler
from tests.recompute_commitment import PREFIXES


def scipy_posteriors(mixture, z, abar):
    """Per attribute (B, V): log N(z; sqrt(abar) m_k, (abar s^2 + 1 - abar) I) by scipy, softmax over k."""
    means, var = mixture.means.numpy(), mixture.variances.numpy()
    n = means.shape[1]
    logp = np.stack([st.multivariate_normal(np.sqrt(abar) * means[k], np.diag(abar * var[k] + 1 - abar)).logpdf(z)
                     for k in range(means.shape[0])], axis=-1).reshape(z.shape[0], -1)
    r = special.softmax(logp, axis=1)
    assert n == z.shape[1]
    return {name: np.stack([r[:, np.asarray(lab) == v].sum(1) for v in range(int(max(lab)) + 1)], 1)
            for name, lab in mixture.labels.items()}


def test_trajectory_posteriors_against_scipy():
    fam = fine_grained_family((2, 3), n_positions=3, n_colours=2, separation=4.0, seed=3)
    runs = cm._runs(fam, list(fam.mixture.labels))
    models, conds, config = runs["amdm"]
    seeds = [5, 6, 7]
    post, abar = cm._trajectory_posteriors(fam, models, conds, config, seeds, 6)
    _, ds = AMDMSampler(models, conds, {"steps": 6, **config}).run_with_cache(seeds, names_filter=["model0.z",
                                                                                                  "model0.z_next"])
    states = [ds.z.isel(step=k, model=0).values for k in range(6)] + [ds.z_next.isel(step=5, model=0).values]
    sched = make_scheduler()
    sched.set_timesteps(6)
    expected_abar = [float(sched.alphas_cumprod[int(t)]) for t in sched.timesteps] + [float(sched.final_alpha_cumprod)]
    np.testing.assert_allclose(abar, expected_abar, rtol=1e-12)
    for k, (z, a) in enumerate(zip(states, abar)):
        ref = scipy_posteriors(fam.mixture, z.reshape(3, -1).astype(np.float64), a)
        for name in ref:
            np.testing.assert_allclose(post[name][k], ref[name], atol=1e-10)
    assert post["position"].shape == (7, 3, 3) and post["colour"].shape == (7, 3, 2)
    # the output has decided: the last state's posterior is nearly one-hot (separation 4, std 0.6)
    assert post["position"][-1].max(1).min() > 0.9


def test_attribute_posteriors_refuses_bad_alpha_bar():
    fam = fine_grained_family((2, 2), n_positions=2, n_colours=2)
    with pytest.raises(ValueError, match="alpha_bar must be a number in"):
        times.attribute_posteriors(fam.mixture, torch.zeros(1, 4), 0.0)


@pytest.mark.parametrize(("column", "expected"), [
    ([0.1, 0.95, 0.5, 0.92, 0.99], 3),  # dips below after a first crossing: the last entry counts
    ([0.95, 0.96, 0.97, 0.98, 0.99], 0),  # above from the start
    ([0.2, 0.5, 0.8, 0.85, 0.9], 5),  # 0.9 itself is not above: never committed
    ([0.2, 0.95, 0.97, 0.99, 0.6], 5),  # drops at the end: never
    ([np.nan, 0.91, 0.93, 0.95, 0.99], 1),  # NaN is not above
])
def test_commitment_index_known_answers(column, expected):
    path = np.array(column)[:, None]
    assert times.commitment_index(path).tolist() == [expected]
    both = np.stack([np.array(column), np.full(5, 0.99)], 1)
    assert times.commitment_index(both).tolist() == [expected, 0]


def test_final_value_and_bad_shapes():
    post = np.zeros((3, 2, 4))
    post[-1, 0, 2] = post[-1, 1, 1] = 1.0
    assert times.final_value(post).tolist() == [2, 1]
    with pytest.raises(ValueError, match="path must have shape"):
        times.commitment_index(np.zeros(3))
    with pytest.raises(ValueError, match="threshold must be in"):
        times.commitment_index(np.zeros((2, 2)), threshold=1.0)


def test_ou_time_is_the_vp_clock():
    t = np.array([0.0, 0.3, 1.7])
    np.testing.assert_allclose(times.ou_time(np.exp(-2 * t)), t, atol=1e-15)
    with pytest.raises(ValueError, match="alpha_bar must lie in"):
        times.ou_time([0.5, 0.0])


@pytest.mark.parametrize(("n", "q"), [(32, 0.1), (128, 0.1), (128, 0.5), (200, 0.9)])
def test_quantile_interval_coverage_from_the_beta_law(n, q):
    """For uniform draws U_(j) ~ Beta(j, n - j + 1): each end of the interval misses the q-quantile (= q) with
    probability at most alpha / 2."""
    x = np.arange(1, n + 1) / (n + 1)  # the order statistics' positions: the interval's index j shows as x[j - 1]
    lo, hi = times.quantile_interval(x, q)
    alpha = 1 - times.LEVEL
    if math.isfinite(lo):
        j = int(round(lo * (n + 1)))
        assert st.beta.cdf(q, j, n - j + 1) >= 1 - alpha / 2  # P(U_(j) <= q)
    else:
        assert st.binom.cdf(0, n, q) >= alpha / 2  # even the smallest may lie above: no lower end
    if math.isfinite(hi):
        j = int(round(hi * (n + 1)))
        assert st.beta.sf(q, j, n - j + 1) >= 1 - alpha / 2
    assert lo <= np.quantile(x, q) <= hi


def test_proportion_interval_zero_events_closed_form():
    lo, hi = times.proportion_interval(0, 40)
    assert lo == 0.0
    assert hi == pytest.approx(1 - (0.025) ** (1 / 40), rel=1e-9)
    with pytest.raises(ValueError, match="need 0 <= k <= n"):
        times.proportion_interval(5, 4)


def two_gaussians(m_norm: float, s: float, n: int = 5) -> GaussianMixture:
    m = np.zeros(n)
    m[1] = m_norm
    return GaussianMixture(torch.tensor(np.stack([m, -m])), torch.full((1, n), s * s, dtype=torch.float64), (n,),
                           {"cls": torch.tensor([0, 1])})


def curvature_at_mean(m_norm: float, s: float, abar: float, h: float = 1e-3) -> float:
    """d^2/dq^2 log p_t(q) at q = 0 along m, by finite differences of scipy's 1D mixture density."""
    sd = math.sqrt(abar * s * s + 1 - abar)
    a = math.sqrt(abar) * m_norm

    def logp(q):
        return np.logaddexp(st.norm.logpdf(q, a, sd), st.norm.logpdf(q, -a, sd))

    return (logp(h) - 2 * logp(0.0) + logp(-h)) / h**2


@pytest.mark.parametrize(("m_norm", "s"), [(2.0, 1.0), (3.0, 0.6), (3.5, 0.3)])
def test_curvature_point_two_symmetric_gaussians(m_norm, s):
    """Two classes +-m, std s: the exact point abar_c = 1 / (1 + |m|^2 - s^2) is where the curvature of the diffused
    log-density at the mean (finite differences of scipy's density) changes sign."""
    sep = sp.separation(two_gaussians(m_norm, s), "cls")
    assert sep.between == pytest.approx(m_norm**2, rel=1e-12)
    assert sep.Lambda == pytest.approx(m_norm**2 + s * s, rel=1e-12)
    assert sep.within == pytest.approx(s * s, rel=1e-9)
    root = optimize.brentq(lambda a: curvature_at_mean(m_norm, s, a), 1e-6, 1 - 1e-9, xtol=1e-12)
    assert sp.curvature_alpha_bar(sep.between, sep.within) == pytest.approx(root, rel=1e-5)
    assert curvature_at_mean(m_norm, s, 0.8 * root) < 0 < curvature_at_mean(m_norm, s, min(1.2 * root, 1.0))


def test_biroli_time_is_the_large_lambda_limit_of_the_exact_point():
    """t_S = log(Lambda)/2 with Lambda = |m|^2 + s^2 equals the exact point's OU time where s^2 = 1/2, and differs
    from it by log((|m|^2 + s^2) / (1 + |m|^2 - s^2)) / 2, which vanishes as Lambda grows."""
    gaps = []
    for m_norm in (2.0, 6.0, 20.0):
        sep = sp.separation(two_gaussians(m_norm, 1.0), "cls")
        root = optimize.brentq(lambda a: curvature_at_mean(m_norm, 1.0, a), 1e-9, 1 - 1e-9, xtol=1e-14)
        gaps.append(sp.speciation_ou_time(sep.Lambda) - (-0.5 * math.log(root)))
        assert gaps[-1] == pytest.approx(0.5 * math.log((m_norm**2 + 1) / m_norm**2), rel=1e-4)
    assert gaps[0] > gaps[1] > gaps[2] > 0 and gaps[2] < 2e-3
    half = sp.separation(two_gaussians(3.0, math.sqrt(0.5)), "cls")
    root = optimize.brentq(lambda a: curvature_at_mean(3.0, math.sqrt(0.5), a), 1e-6, 1 - 1e-9, xtol=1e-12)
    assert sp.speciation_alpha_bar(half.Lambda) == pytest.approx(root, rel=1e-5)
    assert sp.speciation_ou_time(math.exp(2.0)) == pytest.approx(1.0)
    assert math.isnan(sp.curvature_alpha_bar(0.2, 0.36))  # classes closer than their spread: never
    with pytest.raises(ValueError, match="Lambda must be a finite number > 0"):
        sp.speciation_ou_time(0.0)


def test_separation_matches_dense_covariances():
    fam = fine_grained_family((2, 4), n_positions=3, n_colours=2, separation=5.0, seed=1)
    means, var = fam.mixture.means.numpy(), fam.mixture.variances.numpy()
    lab = fam.mixture.labels["position"].numpy()
    mbar = means.mean(0)
    B = sum(np.outer(means[lab == v].mean(0) - mbar, means[lab == v].mean(0) - mbar) / 3 for v in range(3))
    C = np.mean([np.diag(var[k]) + np.outer(means[k] - mbar, means[k] - mbar) for k in range(len(means))], axis=0)
    lam, vec = np.linalg.eigh(B)
    sep = sp.separation(fam.mixture, "position")
    assert sep.between == pytest.approx(lam[-1], rel=1e-10)
    assert sep.Lambda == pytest.approx(vec[:, -1] @ C @ vec[:, -1], rel=1e-10)
    with pytest.raises(ValueError, match="attribute must be one of"):
        sp.separation(fam.mixture, "style")


def test_clock_conversions():
    ac = make_scheduler().alphas_cumprod.numpy().astype(np.float64)
    assert sp.train_timestep(ac, float(ac[600])) == pytest.approx(600, abs=1e-9)
    assert math.isnan(sp.train_timestep(ac, 1e-9))
    abar = np.array([0.01, 0.1, 0.5, 0.9])
    assert sp.fractional_index(abar, 0.1) == pytest.approx(1.0)
    assert sp.fractional_index(abar, math.sqrt(0.1 * 0.5)) == pytest.approx(1.5)
    assert math.isnan(sp.fractional_index(abar, 0.95))


def synthetic(commits: dict, t_s: float, steps: int = 50) -> xr.Dataset:
    """A result with the given commitment states per run (attribute "position") and OU times on a uniform grid."""
    runs = list(commits)
    n = len(next(iter(commits.values())))
    ou = np.linspace(2.5, 0.0, steps + 1)
    ou[-1] = 0.001
    return xr.Dataset(
        {"commit": (("run", "attribute", "sample"), np.array([[commits[r]] for r in runs], dtype=np.int64)),
         **{k: ("attribute", [v]) for k, v in {"t_S": t_s, "Lambda": math.exp(2 * t_s), "abar_S": math.exp(-2 * t_s),
                                                 "timestep_S": 600.0, "index_S": 20.0}.items()}},
        coords={"run": runs, "attribute": ["position"], "sample": np.arange(n), "state": np.arange(steps + 1),
                "ou_time": ("state", ou)}, attrs={"steps": steps})


def test_speciation_verdict_deciding_cases():
    rng = np.random.default_rng(0)
    commits = rng.integers(15, 26, size=200)  # OU times 1.75 .. 1.2
    ou = np.linspace(2.5, 0.0, 51)
    assert cm.speciation_verdict(synthetic({"uncond": commits}, 1.5), "position").status == "holds"
    v = cm.speciation_verdict(synthetic({"uncond": commits}, 0.5), "position")
    assert v.status == "violated" and v.value == pytest.approx(0.5 - np.median(ou[commits]))
    assert cm.speciation_verdict(synthetic({"uncond": commits}, 2.3), "position").status == "violated"
    assert cm.speciation_verdict(synthetic({"uncond": commits[:8]}, 1.5), "position").status == "inconclusive"
    assert cm.speciation_verdict(synthetic({"uncond": commits}, -0.1), "position").status == "outside domain"


def test_early_verdict_deciding_cases():
    early, late = np.full(40, 10), np.full(40, 40)
    mixed = np.r_[np.full(20, 10), np.full(20, 40)]
    ds = synthetic({"uncond": early, "position": late, "amdm": mixed}, 1.0)
    got = {r: cm.early_verdict(ds, "position", r) for r in ("uncond", "position", "amdm")}
    assert [got[r].status for r in got] == ["holds", "violated", "inconclusive"]
    assert got["amdm"].value == 0.5 and got["amdm"].key == "commitment_early_position_amdm"
    assert got["uncond"].kind == "paper claim"


def test_quick_run_end_to_end():
    ds = cm.compute(quick=True, samples=16)
    assert issubclass(cm.Commitment, Analysis) and cm.Commitment.family == "ablations"
    assert list(ds.run.values) == ["uncond", "position", "colour", "amdm"]
    assert ds.sizes["state"] == 51 and ds.path.sizes["sample"] == 16
    assert np.all(np.diff(ds.alpha_bar.values) > 0)
    # the final value's posterior at the output is the largest (argmax): at least 1 / V
    assert float(ds.path.isel(state=-1).min()) >= 0.25
    keys = [v.key for v in cm.verdicts(ds)]
    assert keys[:2] == ["commitment_speciation_position", "commitment_speciation_colour"]
    assert len(keys) == 2 + 2 * 4 and len(set(keys)) == len(keys)
    assert set(cm.plot(ds)) == {"commitment"}
    with pytest.raises(ValueError, match="takes no stores"):
        cm.compute({"a": None})
    with pytest.raises(ValueError, match="samples must be an int"):
        cm.compute(samples=1)


def test_recompute_functions_agree_with_the_verdicts(tmp_path):
    """The recomputations test_validate uses (tests/recompute_commitment.py) give each verdict's value from the
    written result."""
    ds = cm.compute(quick=True, samples=16)
    save_result(ds, tmp_path / "commitment")  # as the runner writes it
    run = types.SimpleNamespace(report=tmp_path)
    for v in cm.verdicts(ds):
        fn = next(f for prefix, f in PREFIXES.items() if v.key.startswith(prefix))
        assert fn(run, v.key) == pytest.approx(v.value, rel=1e-9, abs=1e-12), v.key


def test_style_attribute_gets_its_own_run_and_verdicts():
    ds = cm.compute(quick=True, samples=8, n_styles=2)
    assert [str(r) for r in ds.run.values] == ["uncond", "position", "colour", "style", "amdm"]
    keys = {v.key for v in cm.verdicts(ds)}
    assert {"commitment_speciation_style", "commitment_early_style_amdm"} <= keys
    assert ds.index_S.sel(attribute="style").notnull()
