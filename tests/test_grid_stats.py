"""A claim decided over a grid of settings (``stats.grid_decision``, ``grid.grid_verdict``): its
familywise control measured by simulation (false "holds" anywhere, and a false "holds everywhere",
at most alpha under the null; exactly the one-sided Bonferroni rate at the least favourable
configuration), its power on a large effect, each grid status built from cells that decide it,
the heatmap, the new status "setting-dependent" in every place that counts or styles statuses, and
the digits benchmark's grid of arms (``runs.Grid``, ``runs.grid_arms``)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from amdm_geom.analyses.common import grid as gridmod
from amdm_geom.analyses.common import paired
from amdm_geom.analyses.digits import grid_runs as runs
from amdm_geom.core import stats
from amdm_geom.core.verdicts import STATUS_STYLES, STATUSES, Verdict, counts_line, format_table

ALPHA = 1.0 - stats.LEVEL
M, N, SIMS = 8, 24, 2000  # cells per grid, pairs per cell, simulated grids


def _not_above(k: int, sims: int, rate: float) -> bool:
    """``k`` events in ``sims`` are not significantly (one-sided, 0.001) more than ``rate`` allows."""
    return sps.binomtest(k, sims, rate, alternative="greater").pvalue > 1e-3


def _simulate(true_diffs, sims=SIMS, seed=0, *, margin=0.0, binary=False):
    """Per simulated grid, the per-cell decisions and the grid outcome (independent normal or 0/1 outcomes)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sims):
        cells = {}
        for c, d in enumerate(true_diffs):
            if binary:  # two arms' 0/1 successes, success probabilities 0.5 + d/2 and 0.5 - d/2
                a, b = rng.random(N) < 0.5 + d / 2, rng.random(N) < 0.5 - d / 2
                cells[f"c{c}"] = stats.paired_interval(a.astype(float), b.astype(float), **paired.PAIRED)
            else:
                a = rng.normal(d, 1.0, N)
                cells[f"c{c}"] = stats.paired_interval(a, np.zeros(N))
        g = stats.grid_decision(cells, margin=margin)
        out.append((g.decisions, g.outcome))
    return out


@pytest.mark.parametrize("binary", [False, True])
def test_familywise_false_holds_under_the_null_is_at_most_alpha(binary):
    # every cell's true difference is 0: any "holds" is false
    runs_ = _simulate([0.0] * M, seed=1 + binary, binary=binary)
    any_false = sum(any(d == "holds" for d in dec.values()) for dec, _ in runs_)
    everywhere = sum(outcome == "holds everywhere" for _, outcome in runs_)
    assert _not_above(any_false, SIMS, ALPHA)
    assert _not_above(everywhere, SIMS, ALPHA)
    # (unadjusted 95% intervals would give 1 - 0.975^8 = 18% false "holds" somewhere: the control is what keeps it low)
    assert any_false / SIMS < 1 - (1 - ALPHA / 2) ** M


def test_least_favourable_grid_false_holds_everywhere_is_the_bonferroni_rate():
    # seven cells far above the margin, one exactly at it: "holds everywhere" is false, and decided only where the
    # one null cell's interval misses upwards: probability (1 - level) / (2 M) exactly for normal differences
    margin = 0.05
    runs_ = _simulate([margin + 3.0] * (M - 1) + [margin], seed=3, margin=margin)
    everywhere = sum(outcome == "holds everywhere" for _, outcome in runs_)
    assert _not_above(everywhere, SIMS, ALPHA / (2 * M))
    assert everywhere / SIMS <= ALPHA
    # an unadjusted one-sided 2.5% would show about 50 in 2000: far above what the Bonferroni rate allows
    assert sps.binomtest(everywhere, SIMS, ALPHA / 2, alternative="less").pvalue < 1e-3


def test_power_on_a_large_effect_everywhere():
    # a true difference of 1.2 sd in every cell: "holds everywhere" most of the time, as often as the noncentral t
    # distribution says (per cell P(T > t_crit), T ~ nct(N - 1, 1.2 sqrt(N)), t_crit at 1 - alpha / (2 M); M cells)
    sims, d = 400, 1.2
    hits = sum(outcome == "holds everywhere" for _, outcome in _simulate([d] * M, sims=sims, seed=4))
    power = sps.nct.sf(sps.t.ppf(1 - ALPHA / (2 * M), N - 1), N - 1, d * math.sqrt(N)) ** M
    assert hits >= 0.8 * sims and sps.binomtest(hits, sims, power).pvalue > 1e-3


def test_at_level_matches_scipys_paired_t_interval_and_the_binomial_bound():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.3, 1.0, 40), rng.normal(0.0, 1.0, 40)
    wide = stats.at_level(stats.paired_interval(a, b, 0.95), 0.99)
    ci = sps.ttest_rel(a, b).confidence_interval(0.99)
    assert np.allclose(wide.interval, (ci.low, ci.high), rtol=1e-12) and wide.level == 0.99
    # every difference equal (d = 1 on 0/1 outcomes): mean + p(L) (range - mean), p(L) = 1 - ((1 - L) / 2)^(1/n)
    same = stats.paired_interval(np.ones(30), np.zeros(30), 0.95, value_range=(0.0, 1.0))
    p = 1.0 - (0.01 / 2.0) ** (1.0 / 30)
    assert np.allclose(stats.at_level(same, 0.99).interval, (1.0 + p * (-1.0 - 1.0), 1.0), rtol=1e-12)
    with pytest.raises(ValueError, match="level must lie in"):
        stats.at_level(same, 1.0)


def _cell(mean: float, half: float = 0.01, n: int = 400) -> stats.Paired:
    """A cell whose 95% t interval is mean +- half (the sd that gives it)."""
    sd = half * math.sqrt(n) / sps.t.ppf(0.975, n - 1)
    return stats.Paired(mean, (mean - half, mean + half), sd, n, 0.95, "paired t interval, 95%")


@pytest.mark.parametrize("means, outcome, status", [
    ((0.2, 0.3, 0.25, 0.4), "holds everywhere", "holds"),
    ((-0.2, -0.3, -0.25, -0.4), "violated everywhere", "violated"),
    ((0.2, -0.3, 0.0, 0.4), "setting-dependent", "setting-dependent"),
    ((0.2, 0.0, 0.0, 0.4), "holds in some cells, undecided in the rest", "inconclusive"),
    ((-0.2, 0.0, 0.0, 0.0), "violated in some cells, undecided in the rest", "inconclusive"),
    ((0.0, 0.0, 0.001, 0.0), "undecided everywhere", "inconclusive")])
def test_each_grid_status_from_cells_that_decide_it(means, outcome, status):
    cells = {f"T50_g{g:g}": _cell(m) for g, m in zip((1.0, 3.0, 5.0, 7.5), means)}
    coords = {f"T50_g{g:g}": {"T": 50, "guidance": g} for g in (1.0, 3.0, 5.0, 7.5)}
    v = gridmod.grid_verdict(cells, reference_cell="T50_g7.5", claim="AMDM beats the better single model",
                             where="digits benchmark", key="grid_test", coords=coords, family="digits")
    assert v.status == status and v.extra["grid"]["outcome"] == outcome
    per = 1 - ALPHA / 4  # Bonferroni over 4 cells, computed here from the t quantile of scipy
    half = sps.t.ppf(0.5 + per / 2, 399) * cells["T50_g7.5"].sd / math.sqrt(400)
    assert np.allclose(v.interval, (means[3] - half, means[3] + half), rtol=1e-12) and v.value == means[3]
    assert v.level == pytest.approx(per) and "T50_g7.5" in v.measured and outcome in v.measured
    table = {r["cell"]: r for r in v.extra["grid"]["cells"]}
    for (c, p), m in zip(cells.items(), means):
        expected = "holds" if m - half > 0 else "violated" if m + half <= 0 else "inconclusive"
        assert table[c]["decision"] == expected and table[c]["guidance"] == coords[c]["guidance"]
    for d, word in (("holds", "holds in"), ("violated", "violated in"), ("inconclusive", "undecided in")):
        named = [c for c in cells if table[c]["decision"] == d]
        assert (f"{word} {', '.join(named)}" in v.detail) == bool(named)
    assert "of the 4 cells of T in {50} x guidance in {1, 3, 5, 7.5}; reference T50_g7.5" in v.measured
    assert v.extra["grid"]["simultaneous_level"] == stats.LEVEL and v.extra["comparisons"] == 4


def test_bad_grids_are_refused_in_one_line():
    cells = {"a": _cell(0.1), "b": _cell(0.2)}
    for call, said in ((lambda: gridmod.grid_verdict(cells, reference_cell="c", claim="c", where="w", key="k"),
                        "reference_cell 'c' is not one of the cells"),
                       (lambda: stats.grid_decision({}), "needs one or more cells"),
                       (lambda: stats.grid_decision(cells, 1.5), "level must lie in (0, 1)")):
        with pytest.raises(ValueError) as err:
            call()
        assert said in str(err.value) and "\n" not in str(err.value)


def test_heatmap_draws_every_cell_with_its_decision_and_outlines_the_reference(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    grid = runs.Grid(steps=(20, 50), s_values=((8,), (20,)), guidance=(1.0, 7.5), orders=("position first",))
    means = {"T20_g1_s8": 0.2, "T20_g7.5_s8": -0.2, "T50_g1_s20": 0.0, "T50_g7.5_s20": 0.3}
    cells = {c: _cell(means[c]) for c in grid.cells()}
    v = gridmod.grid_verdict(cells, reference_cell=grid.reference, claim="AMDM beats", where="w", key="k",
                             coords=grid.cells())
    assert v.status == "setting-dependent"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = gridmod.grid_heatmap(v, "s", "guidance")
        fig.savefig(tmp_path / "grid.png")
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert panels == ["T = 20, order = position first", "T = 50, order = position first"]
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert texts.count("\u2713 holds") == 2 and texts.count("\u2717 violated") == 1 and "? undecided" in texts
    outlined = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_linewidth() == 3]
    assert len(outlined) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="two axes of the verdict's grid"):
        gridmod.grid_heatmap(v, "T", "eta")


def test_the_new_status_is_counted_and_styled_everywhere(tmp_path):
    from amdm_geom.app.report import write_report
    from amdm_geom.app.runner.families import finding, format_summary, status_counts
    from amdm_geom.app.runner.report import COLOURS

    assert "setting-dependent" in STATUSES and set(STATUS_STYLES) == set(STATUSES) == set(COLOURS)
    rows = [Verdict(claim="AMDM beats", where="grid", status="setting-dependent", measured="m", bound="b", key="g",
                    family="digits"),
            Verdict(claim="x", where="w", status="holds", measured="m", bound="b", key="h", family="digits")]
    assert counts_line(rows) == "1 holds, 0 violated, 1 setting-dependent, 0 inconclusive, 0 outside domain, 0 vacuous"
    assert status_counts(rows)["setting-dependent"] == 1 and "1 setting-dependent, first: AMDM beats" in finding(rows)
    assert "SETTING-DEPENDENT" in format_table(rows) and "setting-dependent" in format_summary(rows, width=200)
    page = write_report(rows, tmp_path).read_text()
    assert ".status-setting-dependent { color: #8250df; }" in page
    assert 'data-status="setting-dependent"' in page


def test_grid_arms_are_what_the_grid_says():
    grid = runs.Grid()
    arms = runs.grid_arms(grid)
    names = [a.name for a in arms]
    assert len(set(names)) == len(names)
    # counted here from the grid's definition: per (T, guidance) 2 singles + 3 peers; per cell (T, guidance, s, order)
    # AMDM, lerp, eta 0, and the middle and late windows where 2 s <= T
    expected = sum(5 + sum(3 + 2 * (2 * s <= T) for s in ss for _ in grid.orders) * 1
                   for T, ss in zip(grid.steps, grid.s_values) for _ in grid.guidance)
    assert len(arms) == expected == 186
    by = {a.name: a for a in arms}
    ref = by["amdm@T50_g7.5_s20"]
    assert grid.reference == "T50_g7.5_s20" and ref.models == ("position", "colour")
    assert (ref.sampler.num_inference_steps, ref.sampler.agg_steps, ref.sampler.eta, ref.sampler.weights,
            ref.guidance_scale) == (50, 20, 0.3, (0.5,), 7.5)
    assert by["amdm_swapped@T50_g7.5_s20"].models == ("colour", "position")
    assert by["amdm_eta0_swapped@T20_g3_s8"].sampler.eta == 0.0
    assert by["amdm_late@T50_g1_s20"].sampler.agg_window == (30, 50) and "amdm_late@T50_g1_s50" not in by
    assert by["amdm_lerp@T20_g1_s2"].sampler.mix == "lerp" and by["ula@T50_g7.5"].method == "ula"
    assert all(a.batch == runs.FULL.batch for a in arms)
    assert {a.batch for a in runs.grid_arms(grid, quick=True)} == {runs.QUICK.batch}
    # the settings are the specs' fields: the Dataset over arm carries them as coordinates
    ds = paired.arm_dataset(arms, {a.name: {"success": np.zeros(2)} for a in arms})
    amdm = ds.sel(arm=[n for n in names if n.startswith("amdm@")])
    cells = set(zip(amdm.num_inference_steps.values.tolist(), amdm.guidance_scale.values.tolist(),
                    amdm.agg_steps.values.tolist()))
    assert cells == {(c["T"], c["guidance"], c["s"]) for c in grid.cells().values()}
    assert len(grid.cells()) == 2 * 3 * 3 * 2


def test_grid_pairs_compare_arms_of_the_same_cell():
    grid = runs.Grid()
    arms = {a.name: a for a in runs.grid_arms(grid)}
    n_cells = sum(len(ss) for ss in grid.s_values) * len(grid.guidance) * len(grid.orders)  # 36
    for comparison in runs.COMPARISONS:
        pairs, coords = runs.grid_pairs(grid, comparison)
        assert set(pairs) == set(coords) and all(a in arms and b in arms for a, b in pairs.values())
        stage = comparison in ("middle", "late")
        expected = n_cells // 2 if comparison == "role order" else (
            sum(2 * s <= T for T, ss in zip(grid.steps, grid.s_values) for s in ss) * 3 * 2 if stage else n_cells)
        assert len(pairs) == expected and grid.reference in pairs, comparison
        for cell, (a, b) in pairs.items():
            sa, sb = arms[a], arms[b]
            # both arms run at the cell's T and guidance; AMDM at the cell's s and order
            assert sa.sampler.num_inference_steps == sb.sampler.num_inference_steps == coords[cell]["T"]
            assert sa.guidance_scale == sb.guidance_scale == coords[cell]["guidance"]
            assert sa.sampler.agg_steps == coords[cell]["s"] and sa.method == "amdm" and a != b
            if comparison != "role order":
                order = runs.ORDERS[coords[cell]["order"]]
                assert sa.models == order
    with pytest.raises(ValueError, match="comparison must be one of"):
        runs.grid_pairs(grid, "stage")


def test_a_bad_grid_is_refused_in_one_line():
    from amdm_geom.core.spec import SpecError

    for kwargs, said in (({"s_values": ((2, 8, 30), (5, 20, 50))}, "must be ints in [1, T] for T = 20"),
                         ({"s_values": ((2,),)}, "needs one tuple per T"),
                         ({"reference_s": 21}, "must be a cell of the grid"),
                         ({"eta_off": 0.3}, "must differ from eta")):
        with pytest.raises(SpecError) as err:
            runs.Grid(**kwargs)
        assert said in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# recomputation for tests/test_validate.py (the lead wires it in once validate runs a grid subset)


def grid_reference_row(analysis: str, var: str, a: str, b: str):
    """A ``(run, key) -> float`` that recomputes a grid verdict's value, the reference cell's mean
    paired difference of ``var`` between arms ``a`` and ``b``, from ``<report>/<analysis>/results.zarr``
    (numpy's nanmean of the per-sample differences, not ``stats``)."""
    def row(run, key):
        res = xr.open_zarr(run.report / analysis / "results.zarr", consolidated=False)
        d = res[var].sel(arm=a).values.astype(np.float64) - res[var].sel(arm=b).values.astype(np.float64)
        return float(np.nanmean(d))
    return row


#: No grid verdict is printed by validate yet (the full grid is ``analyze digits_benchmark --grid``).
RECOMPUTE: dict = {}
PREFIXES: dict = {}
