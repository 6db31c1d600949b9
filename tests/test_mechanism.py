"""The mechanism analysis: the fit against scipy's linregress, the kept/flip and decided-in-window counts against
direct loops, the verdict rules each way on constructed cells, and one quick run (paired with the digits
benchmark's own arm runner)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from scipy import stats

from amdm_geom.analyses.commitment import mechanism as mech
from amdm_geom.analyses.commitment import mechanism_analysis as ma
from tests.recompute_mechanism import PREFIXES, cell_numbers

# --------------------------------------------------------------------------------------------
# the fit


@pytest.mark.parametrize("n, slope", [(6, 0.8), (12, -0.3), (40, 0.0)])
def test_fit_matches_linregress(n, slope):
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 1, n)
    y = 0.1 + slope * x + 0.2 * rng.standard_normal(n)
    f = mech.fit_line(x, y)
    ref = stats.linregress(x, y)
    q = stats.t.ppf(0.975, n - 2)
    assert math.isclose(f.slope, ref.slope, rel_tol=1e-10, abs_tol=1e-12)
    assert math.isclose(f.intercept, ref.intercept, rel_tol=1e-10, abs_tol=1e-12)
    assert math.isclose(f.stderr, ref.stderr, rel_tol=1e-10)
    assert math.isclose(f.r, ref.rvalue, rel_tol=1e-10, abs_tol=1e-12)
    assert f.dof == n - 2
    assert np.allclose(f.interval, (ref.slope - q * ref.stderr, ref.slope + q * ref.stderr), rtol=1e-10, atol=1e-12)


def test_fit_drops_nan_and_degenerates():
    x, y = np.array([0.1, 0.5, np.nan, 0.9, 0.3]), np.array([0.0, 0.2, 1.0, 0.5, np.nan])
    f = mech.fit_line(x, y)
    ref = stats.linregress([0.1, 0.5, 0.9], [0.0, 0.2, 0.5])
    assert f.n == 3 and math.isclose(f.slope, ref.slope, rel_tol=1e-12)
    two = mech.fit_line([0.1, 0.6], [0.0, 1.0])
    assert math.isclose(two.slope, 2.0) and all(math.isnan(v) for v in two.interval)
    flat = mech.fit_line([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert math.isnan(flat.slope) and mech.slope_status(flat) == "inconclusive"
    with pytest.raises(ValueError, match="one length"):
        mech.fit_line([1, 2], [1, 2, 3])


def test_slope_status_each_way():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 20)
    noise = 0.05 * rng.standard_normal(20)
    assert mech.slope_status(mech.fit_line(x, 0.5 * x + noise)) == "holds"
    assert mech.slope_status(mech.fit_line(x, -0.5 * x + noise)) == "violated"
    assert mech.slope_status(mech.fit_line(x[:4], np.array([0.3, -0.2, 0.25, -0.1]))) == "inconclusive"


# --------------------------------------------------------------------------------------------
# the counts


def _commit_loop(column) -> int:
    k = len(column) - 1
    while k > 0 and column[k - 1] == column[-1]:
        k -= 1
    return k


def test_kept_counts_against_a_loop():
    rng = np.random.default_rng(0)
    paths = rng.integers(-1, 3, size=(11, 200))
    target = rng.integers(0, 3, size=200)
    for s in (0, 3, 7, 10):
        got = mech.kept_counts(paths, target, s)
        read, kept = 0, 0
        for b in range(200):
            if paths[s, b] == target[b]:
                read += 1
                kept += int(paths[-1, b] == target[b])
        assert got == (read, kept, 200)
    hand = np.array([[1, 1, 0, 2], [1, 1, 1, 2], [0, 1, 1, 1]])  # (3 states, 4 samples), target 1 everywhere
    assert mech.kept_counts(hand, np.ones(4, dtype=int), 1) == (3, 2, 4)  # samples 0-2 read 1 at state 1; 0 flips
    assert mech.kept_counts(hand, np.ones(4, dtype=int), 0) == (2, 1, 4)  # samples 0, 1; 0 flips
    assert mech.kept_counts(hand, np.ones(4, dtype=int), 2) == (3, 3, 4)  # at the last state nothing can flip
    with pytest.raises(ValueError, match="s must be"):
        mech.kept_counts(hand, np.ones(4, dtype=int), 3)


def test_decided_in_window_on_built_paths():
    # state:      0  1  2  3  4
    hand = np.array([[0, 1, 1, 1, 1],   # commits at 1 to 1
                     [1, 1, 0, 1, 1],   # commits at 3 to 1
                     [2, 2, 2, 2, 2],   # commits at 0 to 2 (not the target)
                     [1, 1, 1, 1, 1]]).T  # commits at 0 to 1
    target = np.array([1, 1, 1, 1])
    assert mech.decided_in_window(hand, target, 0).tolist() == [False, False, False, True]
    assert mech.decided_in_window(hand, target, 1).tolist() == [True, False, False, True]
    assert mech.decided_in_window(hand, target, 3).tolist() == [True, True, False, True]
    rng = np.random.default_rng(1)
    paths = rng.integers(0, 2, size=(9, 300))
    target = rng.integers(0, 2, size=300)
    for s in (0, 4, 8):
        want = [_commit_loop(paths[:, b]) <= s and paths[-1, b] == target[b] for b in range(300)]
        assert mech.decided_in_window(paths, target, s).tolist() == want


def test_cell_measures_against_loops():
    rng = np.random.default_rng(2)
    S, B = 6, 50
    amdm, single, partner = (rng.integers(0, 2, size=(S, B, 3)) for _ in range(3))
    target = rng.integers(0, 2, size=(B, 3))
    m = mech.cell_measures(amdm=amdm, single=single, partner=partner, target=target, s=2, partner_attribute=1)
    win_a = [(amdm[-1, b, :2] == target[b, :2]).all() for b in range(B)]
    win_1 = [(single[-1, b, :2] == target[b, :2]).all() for b in range(B)]
    d = np.array(win_a, float) - np.array(win_1, float)
    half = stats.t.ppf(0.975, B - 1) * d.std(ddof=1) / math.sqrt(B)
    assert math.isclose(m["gain"], d.mean()) and np.allclose((m["gain_lo"], m["gain_hi"]), (d.mean() - half,
                                                                                             d.mean() + half))
    dims = ("cell", "state", "sample", "attribute")
    res = xr.Dataset({"amdm_reading": (dims, amdm[None]), "single_reading": (dims, single[None]),
                      "partner_reading": (dims, partner[None]), "target": (("sample", "attribute"), target)},
                     coords={"steps": ("cell", [S - 1]), "agg_steps": ("cell", [2]), "partner": ("cell", ["colour"])})
    loop = cell_numbers(res, 0)
    assert math.isclose(m["gain"], loop["gain"])
    assert math.isclose(m["decided_in_window"], loop["decided"]) and math.isclose(m["predictor"], loop["predictor"])
    assert math.isclose(m["decided_in_window_hi"], loop["decided_hi"], rel_tol=1e-9)

    def cp(k, n, q):  # Clopper-Pearson ends from the beta quantiles
        return (stats.beta.ppf(q, k, n - k + 1) if k else 0.0), (stats.beta.ppf(1 - q, k + 1, n - k) if k < n else 1.0)

    (l1, h1), (l2, h2) = cp(m["decided_hits"], B, 0.0125), cp(m["kept_hits"], m["read_at_close_hits"], 0.0125)
    assert np.allclose((m["predictor_lo"], m["predictor_hi"]), (l1 * l2, h1 * h2), rtol=1e-7, atol=1e-12)
    assert m["predictor_lo"] <= m["predictor"] <= m["predictor_hi"]
    carried = sum(amdm[2, b, 1] == target[b, 1] and amdm[-1, b, 1] == target[b, 1] for b in range(B))
    assert math.isclose(m["carried"], carried / B) and math.isclose(m["carried"], m["read_at_close"] * m["kept"])


# --------------------------------------------------------------------------------------------
# the window rule


def _cell(gain: float, sd: float, n: int, decided_hi: float) -> dict:
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return {"gain": gain, "gain_lo": gain - half, "gain_hi": gain + half, "gain_sd": sd, "n": n,
            "decided_in_window_hi": decided_hi}


def test_gain_needs_window_each_way():
    decided = _cell(0.4, 0.5, 64, 0.9)  # not an undecided cell: never looked at
    assert mech.gain_needs_window([decided]) == ("vacuous", [])
    assert mech.gain_needs_window([decided, _cell(0.0, 0.1, 400, 0.3)])[0] == "holds"  # upper 0.0098 < 0.05
    assert mech.gain_needs_window([decided, _cell(0.0, 0.5, 32, 0.3)])[0] == "inconclusive"
    # a gain beyond doubt at the Bonferroni level over m = 2 undecided cells: lower bound at 1 - 0.05 / 2 > 0
    big, small = _cell(0.2, 0.4, 100, 0.2), _cell(0.0, 0.1, 400, 0.4)
    assert 0.2 - stats.t.ppf(1 - 0.0125, 99) * 0.4 / 10 > 0
    assert mech.gain_needs_window([big, decided, small]) == ("violated", [0, 2])
    # significant at 95% alone but not at the Bonferroni level over 3 cells: not violated
    edge = 0.4 / 10 * (stats.t.ppf(0.975, 99) + stats.t.ppf(1 - 0.05 / 6, 99)) / 2
    assert mech.gain_needs_window([_cell(edge, 0.4, 100, 0.1), small, small])[0] == "inconclusive"


def _dataset(cells: list[dict], predictor, gain) -> xr.Dataset:
    full = []
    for c, p, g in zip(cells, predictor, gain):
        row = {k: 0.5 for k in ma._MEASURES} | {k: 10 for k in ma._COUNTS} | c
        full.append(row | {"predictor": p, "gain": g})
    data = {k: ("cell", [r[k] for r in full]) for k in ma._MEASURES + ma._COUNTS}
    return xr.Dataset(data, coords={"cell": [f"c{i}" for i in range(len(full))]}, attrs={"level": 0.95})


def test_verdicts_on_constructed_cells():
    x = np.linspace(0.05, 0.95, 8)
    up = _dataset([_cell(0.0, 0.1, 400, 0.9)] * 8, x, 0.5 * x - 0.2 + 0.01 * np.sin(7 * x))
    v = ma.slope_verdict(up)
    assert v.status == "holds" and v.interval[0] > 0 and "digits ecosystem" in v.where
    assert math.isclose(v.value, stats.linregress(x, up.gain.values).slope)
    down = _dataset([_cell(0.0, 0.1, 400, 0.9)] * 8, x, -0.5 * x + 0.01 * np.sin(7 * x))
    assert ma.slope_verdict(down).status == "violated"
    cells = [_cell(0.01, 0.1, 400, 0.3), _cell(-0.02, 0.1, 400, 0.2)] + [_cell(0.3, 0.3, 64, 0.9)] * 6
    w = ma.window_verdict(_dataset(cells, x, [c["gain"] for c in cells]))
    assert w.status == "holds" and w.key == "mechanism_gain_needs_window" and w.n == 2
    assert math.isclose(w.value, 0.01) and w.extra["cells"] == ["c0", "c1"]
    cells[1] = _cell(0.03, 0.1, 400, 0.2)  # a small gain, but beyond doubt (lower end > 0 at 1 - 0.05 / 2)
    w = ma.window_verdict(_dataset(cells, x, [c["gain"] for c in cells]))
    assert w.status == "violated" and math.isclose(w.value, 0.03)


# --------------------------------------------------------------------------------------------
# a quick run


def test_quick_run(tmp_path):
    from amdm_geom.analyses.digits.runs import Arm, run_arm
    from amdm_geom.app.runner.output import save_dataset
    from amdm_geom.sampling.config import SamplerConfig

    ds = ma.compute(quick=True)
    assert ds.sizes["cell"] == 2 and ds.sizes["sample"] == 8 and ds.sizes["state"] == 11
    assert list(ds.agg_steps.values) == [2, 10] and set(ds.partner.values) == {"colour"}
    tgt = ds.target.values
    for i in range(ds.sizes["cell"]):
        T = int(ds.steps.values[i])
        for var, stored in (("amdm_reading", "success_amdm"), ("single_reading", "success_single")):
            final = ds[var].values[i, T]
            assert math.isclose(float(ds[stored].values[i]), float((final[:, :2] == tgt[:, :2]).all(1).mean()))
        assert math.isclose(float(ds.gain.values[i]), float(ds.success_amdm.values[i] - ds.success_single.values[i]))
    # paired with the digits benchmark: its own arm runner gives the same finished readings
    arm = Arm(name="x", group="amdm", models=("position", "colour"), clip_sample=False, batch=8, seed=0,
              sampler=SamplerConfig(num_inference_steps=10, agg_steps=2))
    assert (run_arm(arm)["detected"] == ds.amdm_reading.values[0, 10]).all()
    vs = ma.verdicts(ds)
    assert [v.key for v in vs] == ["mechanism_slope", "mechanism_gain_needs_window"]
    assert all(v.kind == "finding" and "digits ecosystem" in v.where for v in vs)
    assert vs[0].status == "inconclusive"  # two cells: no residual degrees of freedom
    tb = ma.tables(ds)
    assert len(tb["mechanism"]) == 2 and {"gain", "kept", "flip", "predictor", "read_at_close"} <= set(tb["mechanism"])
    assert tb["mechanism_fit"]["weighted"].tolist() == [False, False]
    assert tb["mechanism_fit"]["x"].tolist() == ["predictor", "carried"]
    figs = ma.plot(ds)
    assert list(figs) == ["mechanism"] and len(figs["mechanism"].axes) == 2
    plt.close("all")
    (tmp_path / "mechanism").mkdir()
    save_dataset(ds, tmp_path / "mechanism" / "results.zarr")  # as the runner writes it
    run = SimpleNamespace(report=tmp_path)
    got = PREFIXES["mechanism_"](run, "mechanism_slope")
    assert math.isclose(got, vs[0].value, rel_tol=1e-9)
    assert PREFIXES["mechanism_"](run, "mechanism_gain_needs_window") is None and math.isnan(vs[1].value)


def test_bad_input():
    with pytest.raises(ValueError, match="--grid and --quick"):
        ma.compute(quick=True, grid=True)
    with pytest.raises(ValueError, match="takes no stores"):
        ma.compute({"a": 1})
    with pytest.raises(ValueError, match="seed must be"):
        ma.compute(seed=-1)
    assert ma.Mechanism.full_grid and ma.Mechanism.family == "trained"
