"""The Table 7 analysis (App. E) on the 2D benchmark: the analysis contract, the benchmark's
Dataset, Table 7 beside the paper's CSV, verdict statuses that follow the numbers, and the
files the runner writes from it."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from amdm_geom.analyses.toy import targets
from amdm_geom.analyses.toy import toy_mixture as tm
from amdm_geom.app.runner import Outcome, write_outcome
from amdm_geom.app.runner.registry import check_analysis, load_analysis

from .test_toy_benchmark import ddpm_gaussian_std


@pytest.fixture(scope="module")
def quick():
    return tm.compute({}, quick=True, experts=("exact",))


def test_follows_the_analysis_contract():
    analysis = load_analysis("toy_mixture")
    assert type(analysis) is tm.ToyMixture and check_analysis(analysis, "toy_mixture") is analysis
    assert analysis.name == "toy_mixture" and analysis.stores == "none" and "Table 7" in analysis.summary
    with pytest.raises(ValueError, match="toy_mixture takes no stores; got 1: a"):
        tm.compute({"a": "x.zarr"})


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^experts must be one of exact, mlp; got 'ema'$"):
        tm.compute(experts=("ema",))
    with pytest.raises(ValueError, match=r"^quick must be True or False; got 'yes'$"):
        tm.compute(quick="yes")
    with pytest.raises(ValueError, match=r"^n must be an int >= 2; got 1$"):
        tm.compute(quick=True, n=1)
    with pytest.raises(ValueError, match=r"^bandwidth is not a setting of Benchmark$"):
        tm.compute(quick=True, bandwidth=0.1)


def test_seed_starts_the_seeds_and_a_small_run_has_every_method():
    ds = tm.compute({}, quick=True, seed=5, n=20, ws=(0.5,), etas=(0.3,), mcmc_steps=1, trajectory=None)
    assert list(ds.seed.values) == [5, 6, 7]
    assert list(ds.arm.values) == ["amdm[w=0.5,eta=0.3]", "summed_score", "du_ula", "du_mala", "du_hmc", "oracle"]
    assert ds.ll.dims == ("arm", "expert", "seed") and ds.ll.shape == (6, 1, 3) and np.isfinite(ds.ll.values).all()
    # the arms' settings are coordinates (NaN where a method has none), and the arms are specs kept in the result
    assert list(ds.method.values) == ["amdm", "summed_score", "du_ula", "du_mala", "du_hmc", "oracle"]
    assert float(ds.w.sel(arm="amdm[w=0.5,eta=0.3]")) == 0.5 and float(ds.eta.sel(arm="amdm[w=0.5,eta=0.3]")) == 0.3
    assert np.isnan(ds.eta.sel(arm="oracle")) and json.loads(ds.attrs["benchmark"])["seeds"] == [5, 6, 7]
    assert "trajectory" not in ds and json.loads(ds.attrs["mcmc"])["steps_per_level"] == 1


def test_oracle_matches_the_target_up_to_the_ddpm_under_dispersion(quick):
    """The oracle's LL exceeds the target's own mean log density by the amount predicted from
    the DDPM recursion applied to each axis of the two main modes: 0.5 sum (1 - r)."""
    tk = targets.make_task("ring_bar")
    big = targets.sample(tk.target, 200_000, np.random.default_rng(9))
    upper = big[(np.abs(big[:, 0]) < 0.15) & (big[:, 1] > 0.3)]
    r = [(ddpm_gaussian_std(sd) / sd) ** 2 for sd in upper.std(0)]
    predicted = 0.5 * sum(1 - ri for ri in r)
    ll_o = float(quick.ll.sel(arm="oracle").mean())
    ll_t = float(quick.ll_floor.mean())
    assert 0.3 < predicted < 0.8
    assert ll_o - ll_t == pytest.approx(predicted, abs=0.15)
    # at the widest bandwidth (blind to mode widths) the oracle is within the floor's spread
    lo = quick.ln_mmd.sel(arm="oracle", bandwidth=0.4).squeeze().values
    fl = quick.ln_mmd_floor.sel(bandwidth=0.4).values
    assert lo.mean() < fl.mean() + 3 * max(fl.std(), 0.3)


def test_oracle_beats_every_method_on_ll(quick):
    ll = quick.ll.sel(expert="exact").mean("seed").to_series()
    assert ll.idxmax() == "oracle"
    assert (ll.drop("oracle") < ll["oracle"]).all()


# --------------------------------------------------------------------------------------------
# Table 7, verdicts, written results


def test_table7_beside_the_papers_csv(quick):
    path = tm.REFERENCE / "table7.csv"
    assert path.read_text().startswith("#")
    paper = pd.read_csv(path, comment="#")
    assert list(paper.columns) == ["method", "ln_mmd", "ll", "var"]
    assert paper.set_index("method").loc["AMDM"].tolist() == [-3.51, -2.43, 0.032]
    assert paper.set_index("method").loc["Du et al. (2023)"].tolist() == [-4.48, 1.30, 0.007]
    tab = tm.table7(quick).set_index("method")
    for label in ("AMDM", "Du et al. (2023)"):
        row = tab.loc[label]
        assert (row.paper_ln_mmd, row.paper_ll, row.paper_var) == tuple(paper.set_index("method").loc[label])
        sel = {"arm": row.setting, "expert": "exact"}
        assert row.ll == pytest.approx(float(quick.ll.sel(sel).mean()))
        assert row.ln_mmd == pytest.approx(float(quick.ln_mmd_avg.sel(sel).mean()))
        assert row["var"] == pytest.approx(float(quick["var"].sel(sel).mean()))
    # the rows are the best of their family by mean LL
    ll = quick.ll.sel(expert="exact").mean("seed").to_series()
    assert tab.loc["AMDM", "setting"] == ll[[m for m in ll.index if m.startswith("amdm")]].idxmax()
    assert tab.loc["Du et al. (2023)", "setting"] == ll[["du_ula", "du_mala", "du_hmc"]].idxmax()
    floor = tab.loc["target (true vs true)"]
    assert floor.ll == pytest.approx(float(quick.ll_floor.mean())) and math.isnan(floor.paper_ll)


def test_verdict_statuses_follow_the_numbers(quick):
    rows = {v.key: v for v in tm.verdicts(quick)}
    ll = quick.ll.sel(expert="exact").mean("seed").to_series()
    mmd = quick.ln_mmd_avg.sel(expert="exact").mean("seed").to_series()
    a = ll[[m for m in ll.index if m.startswith("amdm")]].idxmax()
    d = ll[["du_ula", "du_mala", "du_hmc"]].idxmax()
    fails = ll[a] < ll[d] and mmd[a] > mmd[d]
    assert rows["table7_amdm_fails_exact"].status == ("holds" if fails else "violated")
    assert rows["table7_amdm_fails_exact"].value == pytest.approx(ll[d] - ll[a], rel=1e-12)
    assert rows["toy_oracle_best_ll"].status == ("holds" if ll.idxmax() == "oracle" else "violated")
    assert rows["toy_oracle_best_ll"].kind == "finding"  # (a benchmark's sanity check, not the paper's claim)
    # make AMDM the best sampler: every verdict turns
    rigged = quick.copy(deep=True)
    is_amdm = rigged.method == "amdm"
    rigged["ll"] = rigged.ll.where(~is_amdm, 100.0)
    rigged["ln_mmd_avg"] = rigged.ln_mmd_avg.where(~is_amdm, -10.0)
    rows = {v.key: v for v in tm.verdicts(rigged)}
    assert rows["table7_amdm_fails_exact"].status == "violated"
    assert rows["toy_oracle_best_ll"].status == "violated"
    assert rows["toy_amdm_above_floor_exact"].status == "violated"


def test_the_runner_writes_the_expected_files(quick, tmp_path):
    outcome = Outcome(tm.ToyMixture(), quick, tm.verdicts(quick), tm.plot(quick), tm.tables(quick))
    out = write_outcome(outcome, tmp_path)
    assert out == tmp_path / "toy_mixture"
    names = {p.name for p in out.iterdir()}
    assert {"results.zarr", "table7.csv", "metrics.csv", "verdicts.json", "samples_exact.png", "trajectory.png",
            "norm_law.png", "amdm_sweep.png"} <= names
    saved = json.loads((out / "verdicts.json").read_text())
    assert [r["key"] for r in saved] == [v.key for v in outcome.verdicts]
    tab = pd.read_csv(out / "table7.csv")
    assert list(tab.columns)[:3] == ["expert", "method", "setting"]  # no index column
    assert {"ln_mmd", "ll", "var", "paper_ln_mmd", "paper_ll", "paper_var"} <= set(tab.columns)
    summary = pd.read_csv(out / "metrics.csv").set_index(["arm", "expert"])
    assert summary.loc[("oracle", "exact"), "ll"] == pytest.approx(float(quick.ll.sel(arm="oracle").mean()), rel=1e-5)
    back = xr.open_zarr(out / "results.zarr", consolidated=False)
    np.testing.assert_allclose(back.ll.values, quick.ll.values)


def test_the_mmd_floor_is_reported_over_n_and_bandwidth(quick):
    from amdm_geom.analyses.toy.samplers import STREAMS

    n = quick.sizes["point"]
    assert [int(m) for m in quick.floor_n.values] == [n // 8, n // 4, n // 2, n]
    # independently: the biased MMD^2 by explicit kernel sums on seed 0's two exact sets, first N/8 points
    tk = targets.make_task("ring_bar")
    rng = np.random.default_rng([0, STREAMS["reference"]])
    ref = targets.sample(tk.target, n, rng)
    ref2 = targets.sample(tk.target, n, rng)
    m = n // 8
    x, y = ref2[:m], ref[:m]
    for h in quick.bandwidth.values:
        k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * h * h)).mean()  # noqa: E731
        direct = 0.5 * math.log(k(x, x) + k(y, y) - 2 * k(x, y))
        got = float(quick.ln_mmd_floor_n.sel(seed=0, floor_n=m, bandwidth=h))
        assert got == pytest.approx(direct, abs=1e-9)
    # at N the floor is the one every method is compared with; it falls with N (a finite-N bias)
    np.testing.assert_allclose(quick.ln_mmd_floor_n.sel(floor_n=n).values, quick.ln_mmd_floor.values, rtol=1e-12)
    by_n = quick.ln_mmd_avg_floor_n.mean("seed").values
    assert by_n[0] > by_n[-1] + 0.4
    row = {v.key: v for v in tm.verdicts(quick)}["toy_amdm_above_floor_exact"]
    a = row.detail.split("best AMDM setting (")[1].split(")")[0]
    diff = quick.ln_mmd_avg.sel(arm=a, expert="exact").values - quick.ln_mmd_avg_floor.values
    assert row.value == pytest.approx(diff.mean(), rel=1e-12) and row.n == len(diff)
    assert row.interval[0] < diff.mean() < row.interval[1] and "per doubling" in row.detail
    import matplotlib.pyplot as plt

    assert "mmd_floor" in tm.tables(quick) and "mmd_floor" in tm.plot(quick)
    plt.close("all")
