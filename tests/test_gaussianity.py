"""App. D.1: the schedule's moments against an independent computation from the betas, and the
forward-process normality checks calibrated on Gaussian data."""

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from amdm_geom.analyses.gaussianity import gaussianity
from amdm_geom.app.runner import run_analysis
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, open_run


@pytest.fixture(scope="module")
def moments():
    return gaussianity.schedule_moments(m0=1.0, P0=0.0, tol=0.1)


def test_discrete_moments_from_the_betas(moments):
    # SD 1.x: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2, abar = cumprod(1 - beta)
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    abar = np.cumprod(1 - betas)
    sd = moments.sel(kind="scaled_linear")
    # the discrete moments come from diffusers' float32 alphas_cumprod: agreement to float32's precision
    np.testing.assert_allclose(sd.m_discrete, np.sqrt(abar), rtol=2e-6)
    np.testing.assert_allclose(sd.P_discrete, 1 - abar, rtol=0, atol=2e-6)
    lin = moments.sel(kind="linear")
    np.testing.assert_allclose(lin.m_discrete, np.sqrt(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))), rtol=2e-6)


def test_continuous_moments_by_quadrature(moments):
    # eqs. (40)-(41) with int beta by the trapezoid rule on a fine grid (another route than the closed form)
    s = np.linspace(0, 1, 200001)
    beta = 1000 * (math.sqrt(0.00085) + s * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2
    integral = np.concatenate([[0], np.cumsum((beta[1:] + beta[:-1]) / 2 * np.diff(s))])
    sd = moments.sel(kind="scaled_linear")
    for t in (0.25, 0.6, 1.0):
        beta_integral = np.interp(t, s, integral)
        assert float(sd.m.sel(t=t, method="nearest")) == pytest.approx(math.exp(-beta_integral / 2), rel=1e-6)
        assert float(sd.P.sel(t=t, method="nearest")) == pytest.approx(1 - math.exp(-beta_integral), rel=1e-6)


def test_converged_from_and_the_verdicts(moments):
    sd = moments.sel(kind="scaled_linear")
    ok = (np.abs(sd.m) <= 0.1) & (np.abs(sd.P - 1) <= 0.1)
    first = float(moments.t[np.nonzero(~ok.values)[0][-1] + 1])
    assert float(sd.converged_from) == first
    rows = {v.key: v for v in gaussianity.schedule_verdicts(moments)}
    assert rows["sd_converged_from"].status == ("holds" if first <= 0.6 else "violated")
    assert rows["sd_converged_from"].value == first
    # the onset reading: m = exp(-I/2) reaches 1/2 at I(t) = 2 ln 2 (P = 1 - exp(-I) reaches 1/2 earlier, at ln 2),
    # with I(t) = 1000 int_0^t beta for SD's scaled-linear betas, beta(s) = (r0 + s (r1 - r0))^2, solved in closed form
    r0, r1 = math.sqrt(0.00085), math.sqrt(0.012)
    t_half = ((3 * (r1 - r0) * 2 * math.log(2) / 1000 + r0**3) ** (1 / 3) - r0) / (r1 - r0)
    onset = rows["sd_converged_from"].extra["onset_t"]
    assert t_half == pytest.approx(0.5215, abs=1e-3) and t_half <= onset < t_half + 1e-3 + 1e-12  # (grid of 1e-3)
    assert "within 0.1 at every t > 0.6" in rows["sd_converged_from"].detail
    assert f"from t = {onset:.3f}, before 0.6" in rows["sd_converged_from"].detail
    assert rows["sd_gaussian_T"].status == "holds" and rows["sd_gaussian_T"].value == pytest.approx(float(sd.m_T))


def test_printed_betas_give_no_convergence_and_the_rescaling_it_needs(moments):
    # App. D.1 literally: g_t^2 = beta_t with SD's printed betas on t in [0, 1], integrated by
    # quadrature (scipy), against the analysis' closed form; then the factor c with which
    # g^2 = c beta converges (|m| <= 0.1 and |P - 1| <= 0.1, m(0) = 1, P(0) = 0) at t = 0.6, by root finding
    from scipy import integrate, optimize

    beta = lambda s: (math.sqrt(0.00085) + s * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2  # noqa: E731
    at = lambda t: integrate.quad(beta, 0, t, epsabs=0, epsrel=1e-13)[0]  # noqa: E731
    sd = moments.sel(kind="scaled_linear")
    assert float(sd.printed_integral_1) == pytest.approx(at(1.0), rel=1e-10)
    assert float(sd.printed_m_1) == pytest.approx(math.exp(-at(1.0) / 2), rel=1e-12)  # 0.997: nowhere near 0
    assert float(sd.printed_m_paper_t) == pytest.approx(math.exp(-at(0.6) / 2), rel=1e-12)
    c = optimize.brentq(lambda c: max(math.exp(-c * at(0.6) / 2), math.exp(-c * at(0.6))) - 0.1, 1, 1e6, xtol=1e-9)
    assert float(sd.scale_for_paper_t) == pytest.approx(c / 1000, rel=1e-8)
    assert 2.5 < c / 1000 < 2.6  # the usual rescaling (c = N = 1000) converges only from t = 0.936
    row = {v.key: v for v in gaussianity.schedule_verdicts(moments)}["sd_time_scale"]
    # the verdict's value is max(|m|, |P - 1|) at t = 0.6 = max(exp(-I/2), exp(-I))
    assert row.status == "violated"
    assert row.value == pytest.approx(max(math.exp(-at(0.6) / 2), math.exp(-at(0.6))), rel=1e-12)
    assert f"g^2 = {c / 1000:.2f} N beta" in row.detail and "from t = 0.936" in row.detail
    assert np.isnan(float(moments.scale_for_paper_t.sel(kind="cosine")))


def test_the_normality_checks_are_calibrated_on_gaussian_data():
    # data already N(0, I): every timestep must look Gaussian, with rejection rates at the nominal level
    fam = fine_grained_family((256,), n_positions=1, n_colours=1, separation=0.0, component_std=1.0, seed=2)
    res = gaussianity.forward_gaussianity(fam, timesteps=[0, 300, 999], n_samples=400, n_coords=128, seed=3)
    band = 0.01 + 3 * math.sqrt(0.01 * 0.99 / 128)
    assert float(res.ks_rate.max()) <= band and float(res.ad_rate.max()) <= band
    np.testing.assert_allclose(res.ratio.mean("sample"), 1.0, atol=0.01)


def test_multimodal_data_is_rejected_early_and_accepted_late():
    res = gaussianity.forward_gaussianity(gaussianity.default_family((4, 16, 16)), timesteps=[0, 999],
                                          n_samples=200, n_coords=64, seed=1)
    assert float(res.ks_rate.sel(timestep=0)) > 0.5 and float(res.ad_rate.sel(timestep=0)) > 0.5
    assert float(res.ks_rate.sel(timestep=999)) <= 0.06
    assert res.verdict_normal.sel(timestep=0).item() == "violated"
    band = 0.01 + 3 * math.sqrt(0.01 * 0.99 / 64)
    late = bool(res.ks_rate.sel(timestep=999) <= band and res.ad_rate.sel(timestep=999) <= band)
    assert res.verdict_normal.sel(timestep=999).item() == ("holds" if late else "violated")
    rows = {v.key: v for v in gaussianity.forward_verdicts(res)}
    # at n = 1024 eq. (9)'s bound is 1 - 2 exp(-1024 eps^2 / (1 + 2 eps)) = 0.805; each timestep's exact (beta law)
    # interval of the share lies above it, so it holds
    v = rows["forward_norm_concentration"]
    bound = 1 - 2 * math.exp(-1024 * 0.05**2 / 1.1)
    k = np.rint(res.within_eps.values * 200).astype(int)
    lower = [stats.beta.ppf(0.025, j, 200 - j + 1) for j in k]
    assert min(lower) > bound and v.status == "holds"
    assert v.interval[0] == pytest.approx(min(lower), rel=1e-9) and v.reference == pytest.approx(bound)


def test_exact_coordinate_moments_match_samples():
    fam = gaussianity.default_family((64,), seed=4)
    w = fam.condition()
    z, _ = fam.mixture.sample_diffused(w, 50000, 0.5, np.random.default_rng(0))
    coords = np.arange(5)
    mean, var = gaussianity.coordinate_moments(fam.mixture, w, 0.5, coords)
    np.testing.assert_allclose(z[:, :5].mean(0), mean, atol=0.03)
    np.testing.assert_allclose(z[:, :5].var(0), var, rtol=0.03)
    expected = gaussianity.expected_sq_norm(fam.mixture, w, 0.5)
    assert float((z**2).sum(1).mean()) == pytest.approx(expected, rel=0.01)


def test_trajectory_checks_on_a_store(tmp_path):
    fam = fine_grained_family((4, 16, 16), seed=5)
    sampler = AMDMSampler([fam.model(), fam.model()], [fam.condition(position=0), fam.condition(colour=1)],
                          SamplerConfig(num_inference_steps=8, agg_steps=3))
    path = tmp_path / "s.zarr"
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample([0, 1, 2])
    res = gaussianity.trajectory_gaussianity(path, max_coords=512)
    ds = open_run(path)
    z0 = ds.z.isel(step=0, model=0).values.reshape(3, -1).astype(np.float64)
    n = z0.shape[1]
    # step 0 is z_T ~ N(0, I): E|z_T|^2 = abar E|x0|^2 + n (1 - abar) from the mixture directly
    abar = float(ds.alpha_bar[0])
    w = fam.condition(position=0)
    e_x0 = float((w * ((fam.mixture.means**2).sum(1) + fam.mixture.variances.sum(1))).sum())
    expected = math.sqrt(abar * e_x0 + n * (1 - abar))
    np.testing.assert_allclose(res.ratio.sel(step=0), np.linalg.norm(z0, axis=1) / expected)
    assert list(res.step.values) == list(range(8))
    row, finding = gaussianity.trajectory_verdicts(res, "s")
    late = (res.t.values + 1) / 1000 > 0.6  # App. D.1's range, t > 0.6; the rest is the finding's
    assert row.status in ("holds", "violated") and row.n == 3 * int(late.sum())
    assert row.value == pytest.approx(float(np.abs(res.ratio.values[late] - 1).max()))
    assert finding.kind == "finding" and finding.key == "trajectory_small_t_s"
    assert finding.value == pytest.approx(float(np.abs(res.ratio.values[~late] - 1).max()))


def trajectory_result(ratio_at_t1):
    """A recorded trajectory's result built by hand: 4 samples at t = 901, 701, 501, 1, every ratio within 0.01
    of 1 except sample 0's at t = 1, and no AD rejection."""
    t = np.array([901, 701, 501, 1])
    ratio = np.ones((4, 4)) + 0.01 * np.array([1, -1, 0.5, 0])
    ratio[3, 0] = ratio_at_t1
    return xr.Dataset({"ratio": (("step", "sample"), ratio), "ad_reject": (("step", "sample"), np.zeros((4, 4), bool)),
                       "finite": (("step", "sample"), np.ones((4, 4), bool))},
                      coords={"step": np.arange(4), "t": ("step", t), "sample": np.arange(4)},
                      attrs={"n": 1024, "eps": 0.05, "alpha": 0.01, "T": 4, "incomplete": "",
                             "expected_norm": "sqrt(n)", "n_train": 1000})


def test_a_trajectory_failing_only_near_t0_is_a_finding_not_the_claim():
    # |ratio - 1| = 0.2 at t = 1, (1 + 1) / 1000 = 0.002 <= 0.6: outside App. D.1's t > 0.6
    row, finding = gaussianity.trajectory_verdicts(trajectory_result(1.2), "x")
    assert row.key == "trajectory_gaussian_x" and row.kind == "paper claim"
    assert row.status == "holds" and row.value == pytest.approx(0.01) and row.n == 8  # t = 901, 701: 2 steps x 4
    assert finding.key == "trajectory_small_t_x" and finding.kind == "finding"
    assert finding.status == "violated" and finding.value == pytest.approx(0.2) and finding.n == 8
    assert "step 3 (t = 1)" in finding.detail
    # the same failure at t = 901 is the claim's
    res = trajectory_result(1.0)
    res["ratio"][0, 0] = 1.2
    row, finding = gaussianity.trajectory_verdicts(res, "x")
    assert row.status == "violated" and row.value == pytest.approx(0.2) and finding.status == "holds"


def test_runner_writes_figures_tables_and_each_part(tmp_path):
    fam = fine_grained_family((4, 8, 8), seed=5)
    sampler = AMDMSampler([fam.model(), fam.model()], [fam.condition(position=0), fam.condition(colour=1)],
                          SamplerConfig(num_inference_steps=6, agg_steps=2))
    with sampler.recording(ZarrRecorder(tmp_path / "s.zarr")):
        sampler.sample([0, 1])
    rows = run_analysis("gaussianity", {"s": tmp_path / "s.zarr"}, tmp_path / "report", quick=True)
    assert [r.key for r in rows][:5] == ["sd_gaussian_T", "sd_converged_from", "sd_time_scale",
                                         "forward_gaussian_coords", "forward_norm_concentration"]
    assert [r.key for r in rows][-2:] == ["trajectory_gaussian_s", "trajectory_small_t_s"]
    folder = tmp_path / "report" / "gaussianity"
    for f in ("figure6_moments.png", "forward_gaussianity.png", "trajectory_s.png", "verdicts.json",
              "schedule_summary.csv", "moments.zarr", "forward.zarr", "trajectories/s.zarr"):
        assert (folder / f).exists(), f
    # the written parts are what the public functions compute (quick: 4 x 32 x 32, 128 draws, 32 coordinates)
    forward = xr.open_zarr(folder / "forward.zarr", consolidated=False).load()
    again = gaussianity.forward_gaussianity(gaussianity.default_family((4, 32, 32)), n_samples=128, n_coords=32)
    np.testing.assert_array_equal(forward.ratio.values, again.ratio.values)
    summary = pd.read_csv(folder / "schedule_summary.csv").set_index("kind")
    moments = gaussianity.schedule_moments()
    np.testing.assert_allclose(summary.loc["scaled_linear", "m_T"], float(moments.m_T.sel(kind="scaled_linear")),
                               rtol=1e-5)
    trajectory = xr.open_zarr(folder / "trajectories" / "s.zarr", consolidated=False).load()
    np.testing.assert_array_equal(trajectory.ratio.values,
                                  gaussianity.trajectory_gaussianity(tmp_path / "s.zarr").ratio.values)
