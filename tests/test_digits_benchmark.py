"""The digits benchmark on the shipped weights: the single fine-tunes control their attribute,
the peers run on trained models with the evaluation counts they state, every verdict's status
agrees with an interval computed independently (scipy), and the runner writes its files."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from amdm_geom.analyses.digits import digits_benchmark as db
from amdm_geom.analyses.digits.runs import arms, conditions, targets


@pytest.fixture(scope="module")
def small():
    only = ("position", "colour", "digit", "amdm", "composable", "superdiff_and", "ula", "fkc")
    return db.compute(quick=True, only=only, batch=16, proximity=False)


def test_targets_cover_every_pair_and_conditions_follow_the_attributes():
    tgt = targets(64, seed=3)
    pairs = tgt[:, 0] * 4 + tgt[:, 1]
    assert np.bincount(pairs, minlength=16).tolist() == [4] * 16 and ((tgt[:, 2] >= 0) & (tgt[:, 2] < 10)).all()
    assert np.array_equal(targets(64, seed=3), tgt) and not np.array_equal(targets(64, seed=4), tgt)
    c = conditions("colour", tgt).numpy()
    assert (c[:, 1] == tgt[:, 1]).all() and (c[:, [0, 2]] == -1).all()
    assert (conditions("base", tgt).numpy() == -1).all()


def test_each_fine_tune_controls_its_attribute(small):
    acc = (small.detected == small.target).mean("sample")
    pos, col, dig = (float(acc.sel(arm=a, attribute=a)) for a in ("position", "colour", "digit"))
    print(f"single fine-tunes: position {pos:.3f}, colour {col:.3f}, digit {dig:.3f} (16 samples, 10 steps)")
    assert pos >= 0.8 and col >= 0.8 and dig >= 0.5
    # and not the attributes they were not trained on: chance is 1/4
    assert float(acc.sel(arm="position", attribute="colour")) < 0.6


def test_evaluation_counts(small):
    calls = dict(zip(small.arm.values, small.calls.values))
    T = small.steps.sel(arm="amdm").item()
    s = next(a for a in arms(True) if a.name == "amdm").sampler.agg_steps
    assert calls["position"] == T  # unguided: one pass per step
    assert calls["amdm"] == T + s  # model 2 stops when the window closes
    assert calls["composable"] == 2 * 2 * T  # each model: conditional and null per step
    assert calls["superdiff_and"] == 2 * T and calls["ula"] == 2 * (T + T - 1)
    particles = next(a for a in arms(True) if a.name == "fkc").particles
    assert calls["fkc"] == particles * 2 * T  # K particles, each stepping both experts (FKC, N = 2)


def test_verdicts_agree_with_an_independent_interval(small):
    rows = {v.key: v for v in db.verdicts(small)}
    v = rows["digits_amdm_beats_singles"]
    a = small.success.sel(arm="amdm").values
    statuses = []
    for rival in ("position", "colour"):  # Bonferroni over 2 rivals: 97.5% each, t interval by scipy
        d = a - small.success.sel(arm=rival).values
        if np.ptp(d) > 0:
            lo, hi = sps.t.interval(0.975, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(len(d)))
            statuses.append("holds" if lo > 0 else "violated" if hi <= 0 else "inconclusive")
    if len(statuses) == 2:
        want = "violated" if "violated" in statuses else "holds" if statuses == ["holds"] * 2 else "inconclusive"
        assert v.status == want
    for peer in ("composable", "superdiff_and", "ula", "fkc"):
        row = rows[f"digits_vs_{peer}"]
        d = a - small.success.sel(arm=peer).values
        assert row.value == pytest.approx(d.mean(), abs=1e-12) and row.n == len(d)
        if np.ptp(d) > 0:
            lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(len(d)))
            assert row.interval == pytest.approx((lo, hi), rel=1e-9)
            assert row.status == ("holds" if lo > 0 else "violated" if hi <= 0 else "inconclusive")


def test_tables_figures_and_bad_input(small, tmp_path):
    tab = db.tables(small)["digits_success"]
    assert tab.loc["amdm", "success"] == pytest.approx(float(small.success.sel(arm="amdm").mean()))
    import matplotlib.pyplot as plt

    assert set(db.plot(small)) >= {"success", "by_target", "grid_top_left_red", "grid_bottom_right_blue"}
    plt.close("all")
    with pytest.raises(ValueError, match="unknown arm"):
        db.compute(quick=True, only=("nope",))
    with pytest.raises(ValueError, match="takes no stores"):
        db.compute({"a": tmp_path})


def test_the_result_keeps_images_as_8_bit_pixels():
    import xarray as xr

    from amdm_geom.analyses.digits import digits_benchmark

    x = np.array([-1.5, -1.0, -0.2, 0.0, 0.33, 1.0, 1.2], dtype=np.float32).reshape(1, 1, 1, 1, 7)
    ds = xr.Dataset({"images": (("arm", "sample", "channel", "y", "x"), x), "calls": ("arm", [3])})
    kept = digits_benchmark.saved(ds)
    assert kept.images.dtype == np.uint8 and ds.images.dtype == np.float32  # (the run's own result is untouched)
    back = kept.images.values.astype(np.float64) / 255 * 2 - 1  # the stated encoding, decoded
    assert np.abs(back - np.clip(x, -1, 1)).max() <= 1 / 255 + 1e-9
    assert kept.images.values.ravel().tolist()[:2] == [0, 0] and kept.images.values.ravel()[-1] == 255
    assert kept.calls.values.tolist() == [3]
