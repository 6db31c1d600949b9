"""The paired-benchmark helper (``amdm_geom.analyses.common.paired``): one Dataset over ``arm`` with
every varied setting a coordinate, paired statistics that agree with scipy's on hand-built
outcomes, scales that refuse bad sizes in one line; and the one status rule and the one
``steps_where`` every analysis uses."""

import math

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from amdm_geom.analyses.ablations import runs as ablation_runs
from amdm_geom.analyses.common import paired
from amdm_geom.analyses.common.cells import steps_where
from amdm_geom.analyses.digits import runs as digits_runs
from amdm_geom.analyses.flow import flow_benchmark
from amdm_geom.analyses.toy import settings as toy_settings
from amdm_geom.core.verdicts import status_of
from amdm_geom.sampling import SamplerConfig


def two_arms():
    """Two digits arms that differ in eta and the window only."""
    base = SamplerConfig(num_inference_steps=10, agg_steps=4)
    a = digits_runs.Arm(name="a", group="eta", models=("position", "colour"), sampler=base.replace(eta=0.0))
    b = digits_runs.Arm(name="b", group="stage", models=("position", "colour"), sampler=base.replace(agg_window=(2, 6)))
    return a, b


def test_the_dataset_is_over_arm_with_each_varied_setting_a_coordinate():
    a, b = two_arms()
    outcomes = {"a": {"success": [1.0, 0.0, 1.0], "calls": 14, "trace": np.ones((4, 3))},
                "b": {"success": [0.0, 0.0, 1.0], "calls": 12, "trace": np.ones((2, 3))}}
    settings = {"steps": "sampler.num_inference_steps", "models": lambda arm: "+".join(arm.models)}
    ds = paired.arm_dataset([a, b], outcomes, dims={"trace": ("step", "sample")}, settings=settings)
    assert ds.success.dims == ("arm", "sample") and ds.calls.dims == ("arm",) and list(ds.arm.values) == ["a", "b"]
    # the settings that differ (read from the specs, not the names), and the ones asked for whatever the arms
    assert ds.eta.values.tolist() == [0.0, 0.3] and ds.group.values.tolist() == ["eta", "stage"]
    assert ds.agg_window.values.tolist() == ["null", "[2, 6]"]  # (not a number: its JSON text)
    assert ds.steps.values.tolist() == [10, 10] and ds.models.values.tolist() == ["position+colour"] * 2
    assert "agg_steps" not in ds.coords and "batch" not in ds.coords  # the same in both arms
    # arms of different lengths along a dim: padded with NaN at the end
    assert np.isnan(ds.trace.sel(arm="b").values[2:]).all() and (ds.trace.sel(arm="b").values[:2] == 1).all()
    assert paired.arms_of(ds, digits_runs.Arm) == [a, b]
    assert paired.in_group(ds, "eta") == ["a"] and paired.in_group(ds, "stage", eta=0.3) == ["b"]


def test_every_benchmark_gives_its_settings_as_coordinates():
    specs = ablation_runs.settings(True)
    eta = {s.name: s.sampler.eta for s in specs}
    ds = paired.arm_dataset(specs, {s.name: {"mass": [0.5, 0.5]} for s in specs}, exclude=("run",))
    assert {str(a): float(e) for a, e in zip(ds.arm.values, ds.eta.values)} == eta  # no float(name.split("_")[1])
    assert {"agg_steps", "mix", "num_inference_steps", "n_styles", "shift_mean"} <= set(ds.coords)
    assert "out" not in ds.coords and "run_out" not in ds.coords  # (excluded: where, not what)
    toy = toy_settings.arms(toy_settings.settings(True))
    ds = paired.arm_dataset(toy, {a.name: {"ll": [0.0]} for a in toy})
    assert ds.method.values.tolist()[-1] == "oracle" and np.isnan(ds.w.values[-1]) and ds.w.values[0] == 0.3
    flow = flow_benchmark.arms(True)
    ds = paired.arm_dataset(flow, {a.name: {"mass": [0.0, 1.0]} for a in flow}, settings=flow_benchmark.SETTINGS)
    assert ds.shift_mean.sel(arm="amdm_mu_v").item() == "velocity" and ds.models.sel(arm="vp_flow").item() == \
        "flow:position+scaled_linear:colour"


def test_bad_arms_and_outcomes_are_refused_in_one_line():
    a, b = two_arms()
    with pytest.raises(ValueError, match=r"^arm names must be unique; got a more than once$"):
        paired.arm_dataset([a, a], {"a": {"x": [1.0]}})
    with pytest.raises(ValueError, match=r"^an arm must be a spec \(amdm_geom.core.spec.Spec\) with a name; got 'a'$"):
        paired.arm_dataset(["a"], {"a": {"x": [1.0]}})
    with pytest.raises(ValueError, match=r"^no outcomes for arm\(s\) b; got a$"):
        paired.arm_dataset([a, b], {"a": {"x": [1.0]}})
    with pytest.raises(ValueError, match=r"^outcome x has 2 dims: name them"):
        paired.arm_dataset([a, b], {"a": {"x": np.ones((2, 2))}, "b": {"x": np.ones((2, 2))}})
    with pytest.raises(ValueError, match=r"^setting eta: Arm has no field sampler.nope$"):
        paired.arm_dataset([a, b], {"a": {"x": [1.0]}, "b": {"x": [1.0]}}, settings={"eta": "sampler.nope"})
    with pytest.raises(ValueError, match=r"^setting x: the name of one of the Dataset's variables or dims$"):
        paired.arm_dataset([a, b], {"a": {"x": [1.0]}, "b": {"x": [1.0]}}, settings={"x": "sampler.eta"})


@pytest.mark.parametrize("scale, field, bad, said", [
    (ablation_runs.QUICK, "steps", 0, "steps must be an int >= 2; got 0"),
    (digits_runs.QUICK, "etas", (0.3, -1.0), "etas must be a finite number >= 0; got -1.0"),
    (flow_benchmark.QUICK, "batch", 2.5, "batch must be an int >= 2; got 2.5"),
    (toy_settings.QUICK, "experts", (), "experts must be exact and/or mlp; got ()"),
])
def test_a_scale_refuses_bad_sizes_in_one_line(scale, field, bad, said):
    with pytest.raises(ValueError) as info:
        scale.replace(**{field: bad})
    assert str(info.value) == said and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^quick must be True or False; got 1$"):
        paired.at_scale(1, scale, scale)
    assert paired.at_scale(True, "full", "quick") == "quick" and paired.at_scale(False, "full", "quick") == "full"


def outcomes_ds(**arms) -> xr.Dataset:
    specs = [flow_benchmark.arms(True)[0].replace(name=n) for n in arms]
    return paired.arm_dataset(specs, {n: {"mass": np.asarray(v, dtype=float)} for n, v in arms.items()})


def test_paired_statistics_agree_with_scipy_on_a_hand_built_case():
    a = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=float)
    b = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1], dtype=float)
    c = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    ds = outcomes_ds(a=a, b=b, c=c)
    p = paired.compare(ds, "a", "b", "mass")
    want = sps.ttest_rel(a, b).confidence_interval(0.95)  # scipy's paired t test
    assert p.mean == pytest.approx(np.mean(a - b), abs=1e-15) and p.n == 12
    assert p.interval == pytest.approx((want.low, want.high), rel=1e-12)
    # best of three: each rival at 1 - 0.05 / 2 (Bonferroni), and the verdict's value is the deciding rival's
    bo = paired.best(ds, "a", ("b", "c"), "mass")
    for rival, other in (("b", b), ("c", c)):
        ci = sps.ttest_rel(a, other).confidence_interval(0.975)
        assert bo.comparisons[rival].interval == pytest.approx((ci.low, ci.high), rel=1e-12)
    lows = {r: sps.ttest_rel(a, o).confidence_interval(0.975).low for r, o in (("b", b), ("c", c))}
    want_status = "holds" if min(lows.values()) > 0 else "inconclusive"
    v = paired.best_verdict(bo, key="k", claim="a is best", where="here", measured="m", bound="> b, c", detail="D.")
    assert v.status == bo.status == want_status and v.extra["rival"] == bo.deciding and v.level == pytest.approx(0.975)
    assert v.value == pytest.approx(np.mean(a - {"b": b, "c": c}[bo.deciding]), abs=1e-15)
    # the power sentence: n that resolves 0.05 at 95% with power 0.8, from the paired sd (normal approximation)
    sd = max(np.std(a - b, ddof=1), np.std(a - c, ddof=1))
    z = sps.norm.ppf(1 - 0.05 / 4) + sps.norm.ppf(0.8)
    assert v.extra["n_to_resolve"] == math.ceil((z * sd / 0.05) ** 2) and v.detail.startswith("D. Paired differences")
    # "does as well as": the interval against +-0.05
    e = paired.equivalence_verdict(p, key="e", claim="a as b", where="here", measured="m", detail="D.")
    assert e.status == ("holds" if -0.05 <= want.low and want.high <= 0.05 else
                        "violated" if want.low > 0.05 or want.high < -0.05 else "inconclusive")
    assert e.bound == "|diff| <= 0.05" and e.reference == 0.05 and e.test.endswith("equivalence within +-0.05")


def test_an_undecided_equivalence_that_shows_a_difference_says_so():
    # 0/1 outcomes, the first arm ahead on 12 of 64 pairs and behind on 2: the 95% t interval lies above 0 but
    # straddles +0.05, so "does as well" stays inconclusive while the detail names the significant difference
    a = np.r_[np.ones(12), np.zeros(2), np.zeros(50)]
    b = np.r_[np.zeros(12), np.ones(2), np.zeros(50)]
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert 0 < ci.low < 0.05 < ci.high
    ds = xr.Dataset({"mass": (("arm", "sample"), np.stack([a, b]))}, coords={"arm": ["a", "b"]})
    e = paired.equivalence_verdict(paired.compare(ds, "a", "b", "mass"), key="e", claim="a as b", where="here",
                                   measured="m", detail="D.")
    assert e.status == "inconclusive" and e.interval == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert "significantly better than the second" in e.detail
    # an interval around 0: no such sentence
    e0 = paired.equivalence_verdict(paired.compare(ds.assign(mass=ds.mass.copy(data=np.stack([a, a[::-1]]))),
                                                   "a", "b", "mass"), key="e", claim="c", where="w", measured="m",
                                    detail="D.")
    assert "significantly" not in e0.detail


def test_the_one_status_rule():
    assert status_of(np.True_, True) == "violated" and status_of(False, np.True_) == "holds"
    assert status_of(False, False) == "vacuous" and status_of(False, False, "inconclusive") == "inconclusive"
    mask = xr.DataArray([[False, False], [False, False]], dims=("step", "sample"))
    assert status_of(mask.any(), mask.any()) == "vacuous" and status_of(False) == "holds"
    with pytest.raises(ValueError, match=r"^otherwise must be one of .*; got 'maybe'$"):
        status_of(False, False, "maybe")


def test_steps_where_says_the_steps_and_their_t():
    mask = xr.DataArray(np.zeros((7, 2), dtype=bool), dims=("step", "sample"),
                        coords={"step": np.arange(7), "t": ("step", np.arange(7)[::-1] * 100)})
    assert steps_where(mask) == "nowhere"
    mask[[1, 2, 3, 4, 6], 1] = True
    assert steps_where(mask) == "steps 1 (t=500), 2 (t=400), 3 (t=300), 4 (t=200) and 1 more"
    assert steps_where(mask.drop_vars("t"), shown=2) == "steps 1, 2 and 3 more"
    # a flow's float32 t = 1000 s, to 6 significant digits (not float32's noise digits)
    flow = mask.assign_coords(t=("step", np.linspace(1000.0, 1000 / 49, 7, dtype=np.float32)))
    assert float(flow.t[1]) != 836.735  # (float32: 836.734680...)
    assert steps_where(flow, shown=1) == "steps 1 (t=836.735) and 4 more"
