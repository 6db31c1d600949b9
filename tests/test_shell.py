"""Lemma A.1 and Prop. 3.2 analyses against independent computations: scipy's chi-square law,
numpy geometry, eq. (8) written out, and torch.distributions' mixture density."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from scipy import stats
from torch import distributions as D

from amdm_geom.analyses.prop32 import shell
from amdm_geom.app import cli
from amdm_geom.app.runner import run_analysis
from amdm_geom.models.gmm import fine_grained_family, from_description
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, built_of, etas, open_run
from tests.reference import ref_angle

SHAPE, STEPS, S = (4, 16, 16), 10, 5


def make_store(path, ddim_eta=1.0, eta=0.3, w=0.5):
    fam = fine_grained_family(SHAPE, separation=6.0, seed=7)
    models = [fam.model(name="a"), fam.model(name="b")]
    conds = [fam.condition(position=1), fam.condition(colour=2)]
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=STEPS, agg_steps=S, ddim_eta=ddim_eta,
                                                       eta=eta, weights=(w,)))
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample([0, 1, 2, 3])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("shell")
    return {"a": make_store(d / "a.zarr"), "b": make_store(d / "b.zarr", eta=20.0, w=0.8)}


def test_lemma_grid_against_the_chi_square_law():
    grid = shell.lemma_grid(n_grid=(2, 16, 256), eps_grid=(0.05, 0.2, 0.6), draws=3000, seed=1)
    for n in grid.n.values:
        for e in grid.eps.values:
            lo = stats.chi2.cdf((max(1 - e, 0) ** 2) * n, n)
            exact = stats.chi2.cdf(((1 + e) ** 2) * n, n) - lo
            assert float(grid.exact.sel(n=n, eps=e)) == pytest.approx(exact, abs=1e-10)
            se = math.sqrt(exact * (1 - exact) / 3000) + 1e-4
            assert abs(float(grid.monte_carlo.sel(n=n, eps=e)) - exact) < 5 * se
            b = 1 - 2 * math.exp(-n * e**2 / (1 + 2 * e))
            status = shell.lemma_cells(grid).sel(n=n, eps=e).item()
            assert status == ("vacuous" if b <= 0 else "holds" if b <= exact else "violated")
    (row,) = shell.lemma_verdicts(grid)
    assert row.status == "holds"
    # its number: the smallest bounded/exact mass outside the shell over the cells that hold
    ratios = []
    for n in grid.n.values:
        for e in grid.eps.values:
            miss = stats.chi2.sf(((1 + e) ** 2) * n, n) + (stats.chi2.cdf(((1 - e) ** 2) * n, n) if e < 1 else 0.0)
            b = 2 * math.exp(-n * e**2 / (1 + 2 * e))
            if 1 - b > 0 and miss > 1e-300:
                ratios.append(b / miss)
    assert row.value == pytest.approx(min(ratios), rel=1e-6)


def test_prop32_quantities_against_numpy(runs):
    res, ds = shell.prop32(runs["a"]), open_run(runs["a"])
    n = int(np.prod(SHAPE))
    assert list(res.step.values) == list(range(S))
    for k in (0, 3):
        sigma = float(ds.sigma[k])
        zt = ds.z_shift.isel(step=k, model=0).values.reshape(4, -1).astype(np.float64)
        mu2 = ds.mu.isel(step=k, model=1).values.reshape(4, -1).astype(np.float64)
        radius = np.linalg.norm(zt - mu2, axis=1) / (sigma * math.sqrt(n))
        np.testing.assert_allclose(res.radius.sel(step=k), radius, rtol=1e-9)
        z1 = ds.z_next.isel(step=k, model=0).values.reshape(4, -1).astype(np.float64)
        z2 = ds.z_next.isel(step=k, model=1).values.reshape(4, -1).astype(np.float64)
        phi, delta = ref_angle(z1, z2), np.linalg.norm(z1 - z2, axis=1)
        d = np.sin(0.5 * phi / 2) / np.sin(phi / 2) * delta + 0.3  # phi_w with w = 0.5, eta = 0.3
        np.testing.assert_allclose(res.d.sel(step=k), d, rtol=1e-9)
        for e in res.eps.values:
            e_eff = e - d / (sigma * math.sqrt(n))
            ok = e_eff >= 0
            want = np.full(e_eff.shape, np.nan)
            want[ok] = 1 - 2 * np.exp(-n * e_eff[ok] ** 2 / (1 + 2 * e_eff[ok]))
            np.testing.assert_allclose(res.bound.sel(step=k, eps=e), want, rtol=1e-12, equal_nan=True)
            np.testing.assert_array_equal(res.in_shell.sel(step=k, eps=e), np.abs(radius - 1) <= e)


def test_model_two_own_samples_sit_on_its_shell(runs):
    # sigma xi with xi ~ N(0, I_n): the radius concentrates at 1 with spread 1/sqrt(2n)
    res = shell.prop32(runs["a"])
    n = int(np.prod(SHAPE))
    assert float(np.abs(res.radius_own - 1).max()) < 5 / math.sqrt(2 * n)


def test_domain_membership_against_torch_distributions(runs):
    res, ds = shell.prop32(runs["a"]), open_run(runs["a"])
    built = built_of(ds)
    model = from_description(built.models[1], dtype=torch.float64)
    w = torch.tensor(built.conditions[1], dtype=torch.float64)
    mix = model.mixture
    for k in (1, 4):
        abar = float(ds.alpha_bar_prev[k])
        comp = D.Independent(D.Normal(math.sqrt(abar) * mix.means, torch.sqrt(abar * mix.variances + 1 - abar)), 1)
        ref = D.MixtureSameFamily(D.Categorical(probs=w / w.sum()), comp)
        zt = torch.from_numpy(ds.z_shift.isel(step=k, model=0).values.reshape(4, -1).astype(np.float64))
        tau = float(res.tau.sel(step=k)[0])
        np.testing.assert_array_equal(res.in_domain.sel(step=k), (ref.log_prob(zt) >= tau).numpy())
        # tau leaves about 5% of exact draws of p_(t-1)(. | y2) below it
        draws = ref.sample((2000,))
        below = float((ref.log_prob(draws) < tau).double().mean())
        assert abs(below - 0.05) < 0.035


def test_sweep_summary_and_verdicts(runs):
    summary = shell.sweep(runs)
    assert list(summary.run.values) == ["a", "b"]
    assert list(summary.w.values) == [0.5, 0.8] and list(summary.eta.values) == [0.3, 20.0]
    res = shell.prop32(runs["b"]).isel(step=slice(1, None))
    np.testing.assert_allclose(summary.membership.sel(run="b"), res.in_shell.mean(("step", "sample")))
    rows = {v.key: v for v in shell.prop32_verdicts(summary)}
    defined = summary.defined_share > 0
    bad = (summary.membership < summary.bound_mean) & defined
    expected = "violated" if bool(bad.any()) else ("holds" if bool(defined.any()) else "vacuous")
    assert rows["prop32_bound_runs"].status == expected
    claim = rows["prop32_shell_claim"]
    eps_star = float(claim.measured.split("(")[2].split(")")[0])
    assert claim.value == pytest.approx(float(summary.membership.sel(eps=eps_star).min()))
    assert rows["prop32_domain_runs"].value == pytest.approx(float(np.nanmin(summary.in_domain)))


def test_prop32_needs_a_stochastic_run(tmp_path):
    path = make_store(tmp_path / "ddim.zarr", ddim_eta=0.0)
    with pytest.raises(ValueError, match="sigma_t > 0"):
        shell.prop32(path)


def test_runner_writes_every_part(runs, tmp_path):
    out = tmp_path / "rep"
    rows = run_analysis("shell", runs, out, seed=0)
    folder = out / "shell"
    for f in ("lemma_grid.zarr", "prop32_a.zarr", "prop32_b.zarr", "prop32_summary.zarr", "prop32_summary.csv",
              "verdicts.json", "lemma_a1.png", "membership.png", "radius_a.png", "radius_b.png"):
        assert (folder / f).exists(), f
    assert [r.key for r in rows] == ["lemma_a1_grid", "prop32_bound_runs_a", "prop32_bound_runs_b",
                                     "prop32_shell_claim", "prop32_domain_runs", "prop32_eta_sign", "prop32_existence",
                                     "prop32_partner_eta"]
    for f in ("proof_a.zarr", "proof_b.zarr", "proof_a.csv", "proof_b.csv"):
        assert (folder / f).exists(), f
    written = xr.open_zarr(folder / "prop32_b.zarr", consolidated=False).load()
    np.testing.assert_array_equal(written.radius.values, shell.prop32(runs["b"]).radius.values)
    summary = pd.read_csv(folder / "prop32_summary.csv").set_index(["run", "eps"])
    direct = shell.sweep(runs)
    np.testing.assert_allclose(summary.loc[("b", 0.05), "membership"], float(direct.membership.sel(run="b", eps=0.05)))


def test_a_store_named_summary_is_refused(runs):
    with pytest.raises(ValueError, match="may not be named 'summary'"):
        shell.compute({"summary": runs["a"]})


def test_cli_analyze(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["analyze", "shell", str(runs["a"]), str(runs["b"]), "--out", str(out)]) == 0
    assert (out / "shell" / "radius_b.png").exists()
    assert "Lemma A.1" in capsys.readouterr().out


def proof_reference(path):
    """Eqs. (28)-(30) from the store with numpy alone: per aggregation step with sigma > 0 and per
    sample, (|z~ - mu_1| - |z' - mu_1|) / eta, eta_1* = |z' - mu_1| - sigma sqrt n and the eta of
    smallest magnitude with |z' - eta u_1 - mu_2| = sigma sqrt n (np.roots of the quadratic)."""
    ds = open_run(path)
    eta = etas(ds)[0]
    n = int(np.prod(SHAPE))
    moved, own, partner = [], [], []
    for k in range(ds.sizes["step"]):
        if not bool(ds.aggregated[k]) or float(ds.model_sigma[1, k]) == 0:
            continue
        R = float(ds.model_sigma[0, k]) * math.sqrt(n)
        zp = ds.agg_z.isel(step=k).values.astype(np.float64).reshape(4, -1)
        zt = ds.z_shift.isel(step=k, model=0).values.astype(np.float64).reshape(4, -1)
        mu1, mu2 = (ds.mu.isel(step=k, model=m).values.astype(np.float64).reshape(4, -1) for m in (0, 1))
        for s in range(4):
            r = np.linalg.norm(zp[s] - mu1[s])
            moved.append((np.linalg.norm(zt[s] - mu1[s]) - r) / eta)
            own.append(r - R)
            u, v = (zp[s] - mu1[s]) / r, zp[s] - mu2[s]
            roots = np.roots([1.0, -2 * (v @ u), v @ v - R**2])
            real = roots[np.abs(roots.imag) < 1e-9].real
            partner.append(real[np.argmin(np.abs(real))] if len(real) else np.nan)
    return np.array(moved), np.array(own), np.array(partner)


def test_prop32_proof_against_numpy(runs):
    results = {name: shell.proof(path) for name, path in runs.items()}
    refs = {name: proof_reference(path) for name, path in runs.items()}
    for name, res in results.items():
        moved, own, partner = refs[name]
        np.testing.assert_allclose(res.moved.values.ravel() / res.attrs["eta"], moved, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res.eta_own.values.ravel(), own, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res.eta_partner.values.ravel(), partner, rtol=1e-6, atol=1e-6)
    rows = {v.key: v for v in shell.proof_verdicts(results)}
    moved = np.concatenate([r[0] for r in refs.values()])
    own = np.concatenate([r[1] for r in refs.values()])
    partner = np.concatenate([r[2] for r in refs.values()])
    # eq. (7) moves z' towards mu_1 (the distance shrinks by eta); eq. (29) has it grow by eta
    assert (moved < 0).all()
    assert rows["prop32_eta_sign"].status == "violated"
    assert rows["prop32_eta_sign"].value == pytest.approx(np.median(moved), rel=1e-9)
    assert rows["prop32_eta_sign"].n == moved.size == 2 * S * 4
    existence = rows["prop32_existence"]
    assert existence.value == pytest.approx(np.mean(own > 0)) and existence.n == own.size
    assert existence.status == ("holds" if (own > 0).all() else "violated")
    assert rows["prop32_partner_eta"].value == pytest.approx(np.mean(partner > 0))
    missed = int(np.isnan(partner).sum())
    assert f"absent (the line misses the shell) on {missed} of" in rows["prop32_partner_eta"].detail


def test_prop32_proof_on_a_constructed_step():
    # one step built by hand in 2 coordinates: z' at distance 3 from mu_1 = 0, shell radius
    # sigma sqrt n = 5, eta = 1: eq. (7) gives |z~ - mu_1| = 2 (moved -1), eta_1* = 3 - 5 = -2;
    # mu_2 = (0, 4): along z' - eta (1, 0) from z' = (3, 0), |(3 - eta, -4)| = 5 at eta = 0 or 6
    from amdm_geom.analyses.prop32.proof import _values

    agg = np.array([[3.0, 0.0]])
    out = _values(agg, agg - np.array([[1.0, 0.0]]), np.zeros((1, 2)), np.array([[0.0, 4.0]]), 5.0, 5.0)
    assert out["moved"][0] == pytest.approx(-1.0) and out["eta_own"][0] == pytest.approx(-2.0)
    assert out["radius_agg"][0] == pytest.approx(0.6) and out["eta_partner"][0] == pytest.approx(0.0, abs=1e-12)
    far = _values(agg, agg, np.zeros((1, 2)), np.array([[0.0, 40.0]]), 5.0, 5.0)
    assert np.isnan(far["eta_partner"][0])  # the line y = 0 misses the circle of radius 5 around (0, 40)


def test_eq8_printed_formula_off_its_domain_and_the_membership_interval(runs):
    res = {name: shell.prop32(path) for name, path in runs.items()}
    summary = shell.summarize(res)
    n = int(np.prod(SHAPE))
    some_off = False
    for name, r in res.items():
        later = r.isel(step=slice(1, None))
        e = later.eps.values[None, None, :] - later.d_scaled.values[:, :, None]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            printed = 1 - 2 * np.exp(-n * e**2 / (1 + 2 * e))  # eq. (8) as printed, written out
        off = (e < 0) & (e > -0.5)
        some_off |= bool(off.any())
        got = summary.sel(run=name)
        for j, eps in enumerate(later.eps.values):
            cells = off[:, :, j]
            if cells.any():
                assert float(got.printed_off.sel(eps=eps)) == pytest.approx(printed[:, :, j][cells].mean(), rel=1e-12)
                assert float(got.membership_off.sel(eps=eps)) == pytest.approx(
                    later.in_shell.transpose("step", "sample", "eps").values[:, :, j][cells].mean())
        assert int(got.cells) == later.sizes["step"] * later.sizes["sample"]
    assert some_off  # run a has cells off eq. (8)'s domain by less than 1/2
    row = {v.key: v for v in shell.prop32_verdicts(summary)}
    assert "eq. (8) does not apply, yet its printed formula" in row["prop32_bound_runs"].detail
    # Clopper-Pearson from the beta law (not binomtest): the worst run's in-shell cells at eps*
    claim = row["prop32_shell_claim"]
    eps_star = float(claim.measured.split("(")[2].split(")")[0])
    worst = str(summary.membership.sel(eps=eps_star).idxmin("run").values)
    later = res[worst].isel(step=slice(1, None))
    k, m = int(later.in_shell.sel(eps=eps_star).sum()), later.sizes["step"] * later.sizes["sample"]
    lo = stats.beta.ppf(0.025, k, m - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, m - k) if k < m else 1.0
    assert claim.n == m and claim.level == 0.95
    assert claim.interval == pytest.approx((lo, hi), rel=1e-9, abs=1e-12)
    assert claim.interval[0] <= claim.value <= claim.interval[1]


def test_domain_membership_interval(runs):
    res = {name: shell.prop32(path) for name, path in runs.items()}
    row = {v.key: v for v in shell.prop32_verdicts(shell.summarize(res))}["prop32_domain_runs"]
    later = {name: r.isel(step=slice(1, None)) for name, r in res.items()}
    freq = {name: float(r.in_domain.mean()) for name, r in later.items()}
    worst = min(freq, key=freq.get)
    k, m = int(later[worst].in_domain.sum()), later[worst].in_domain.size
    lo = stats.beta.ppf(0.025, k, m - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, m - k) if k < m else 1.0
    assert row.value == pytest.approx(freq[worst]) and row.n == m
    assert row.interval == pytest.approx((lo, hi), rel=1e-9, abs=1e-12)
