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

from amdm_geom import cli
from amdm_geom.analyses import shell
from amdm_geom.denoisers.gmm import fine_grained_family, from_description
from amdm_geom.runner import run_analysis
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, open_run, run_config
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
    cfg = run_config(ds)
    model = from_description(cfg["models"][1], dtype=torch.float64)
    w = torch.tensor(cfg["conditions"][1], dtype=torch.float64)
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
    assert [r.key for r in rows] == ["lemma_a1_grid", "prop32_bound_runs", "prop32_shell_claim", "prop32_domain_runs"]
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
