"""The ablation runs and their verdict rules (the numbers themselves are recomputed from the
stores in tests/test_validate.py)."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

from amdm_geom.analyses.ablations import ablations
from amdm_geom.analyses.ablations import runs as ablation_runs
from amdm_geom.analyses.common import paired
from amdm_geom.core import geometry
from amdm_geom.core import stats as stats_
from amdm_geom.store import open_run


def test_settings_cover_every_group_with_unique_names():
    for quick in (True, False):
        sets = ablations.settings(quick)
        names = [s.name for s in sets]
        assert len(names) == len(set(names))
        assert {s.group for s in sets} == set(ablations.GROUPS)
    full = {s.name: s for s in ablations.settings(False)}
    assert full["amdm"].sampler.num_inference_steps == 50 and full["amdm"].sampler.agg_steps == 20
    assert full["n3_amdm"].sampler.weights == (0.5, 0.65)
    assert full["stage_late"].sampler.agg_window == (10, 20)
    assert {s.sampler.eta for s in full.values() if s.group == "table4"} >= {0.0, 0.3, 0.5, 40.0}
    # each run is a typed spec: its models, not role strings
    cross = full["cross_ve"]
    assert [(m.attribute, m.sde) for m in cross.models] == [("position", "scaled_linear"), ("colour", "ve")]
    assert cross.sampler.allow_schedule_mismatch and full["n3_style"].family.n_styles == 3


def test_a_run_spec_round_trips_and_refuses_bad_models():
    spec = ablations.settings(True)[0]
    assert ablation_runs.Spec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match=r"^models\.0\.attribute style needs a family with styles > 1; got 'style'$"):
        spec.replace(models=(spec.models[0].replace(attribute="style"),))
    with pytest.raises(ValueError, match=r"^models\.0\.sde must be one of scaled_linear, linear, cosine, ve, flow; "
                                         r"got 'colour:ve'$"):
        ablation_runs.Spec.model_validate({**spec.model_dump(), "models": [{"attribute": "colour",
                                                                             "sde": "colour:ve"}]})


def test_runs_keep_model_one_at_the_recorded_steps(tmp_path):
    stores = ablations.run_settings(tmp_path, quick=True, only={"model1", "cross_ve"})
    assert set(stores) == {"model1", "cross_ve"}
    ds = open_run(stores["cross_ve"])
    steps = ablations.recorded_steps(ablations.settings(True)[0].sampler)
    spec = ablation_runs.Spec.model_validate_json(ds.attrs["spec"])
    assert ds.attrs["recorded_steps"] == steps and spec.group == "table10" and ds.attrs["analysis"] == "ablations"
    assert set(ds.data_vars) == {"z_next"} and ds.z_next.dtype == np.float32
    kept = [k for k in range(ds.sizes["step"]) if np.isfinite(ds.z_next.isel(step=k, model=0).values).all()]
    assert kept == steps and np.isnan(ds.z_next.isel(model=1).values).all()


#: Every run's spec, quick and full, by name (a fake result's arms).
SPECS = {s.name: s for s in [*ablations.settings(True), *ablations.settings(False)]}


def fake(success: dict) -> xr.Dataset:
    """A compute()-like dataset with given per-sample masses (to test the verdict rules): the
    named runs' specs as arms, their settings as coordinates."""
    arms = [SPECS[n] for n in success]
    outcomes = {n: {"mass": np.asarray(v, dtype=float)} for n, v in success.items()}
    ds = paired.arm_dataset(arms, outcomes, settings=ablations.SETTINGS, exclude=("run",),
                            attrs={"quick": 1, "latent_size": 1024})
    ds = paired.with_mean(ds, "mass", "success")
    ds["hard_rate"] = ds.success
    ds["max_norm_dev"] = ds.success * 0
    ds["min_logp_z"] = ds.success * 0
    return ds


def ones(k, n):
    """k successes then n - k failures."""
    return [1.0] * k + [0.0] * (n - k)


def t_interval(d, level):
    """The t interval of mean(d), independently: scipy's one-sample t test."""
    ci = stats.ttest_1samp(np.asarray(d, dtype=float), 0.0).confidence_interval(level)
    return ci.low, ci.high


def test_ties_are_never_best():
    same = ones(100, 200)
    ds = fake({"stage_early": same, "stage_middle": same, "stage_late": ones(0, 200)})
    (row,) = ablations.verdicts(ds)
    # 200 equal pairs bound a differing pair's rate (Clopper-Pearson at 97.5%, Bonferroni over 2) but not to 0
    bound = stats.binomtest(0, 200).proportion_ci(0.975).high
    assert row.status == "inconclusive" and row.value == 0.0 and row.interval == pytest.approx((-bound, bound))
    assert row.n == 200 and row.level == pytest.approx(0.975) and "Bonferroni over 2" in row.test


def test_early_best_holds_or_is_violated_by_its_intervals():
    n = 200
    early, middle = ones(120, n), ones(40, n)
    ds = fake({"stage_early": early, "stage_middle": middle, "stage_late": ones(30, n)})
    (row,) = ablations.verdicts(ds)
    assert row.status == "holds" and row.value == pytest.approx(0.4)
    assert row.interval == pytest.approx(t_interval(np.subtract(early, middle), 0.975), rel=1e-9)
    ds = fake({"stage_early": middle, "stage_middle": early, "stage_late": ones(30, n)})
    (row,) = ablations.verdicts(ds)
    assert row.status == "violated" and row.value == pytest.approx(-0.4)
    # a small, noisy difference: inconclusive, with the sample size that would decide it
    rng = np.random.default_rng(0)
    a, b = (rng.random(48) < 0.5).astype(float), (rng.random(48) < 0.45).astype(float)
    ds = fake({"stage_early": a, "stage_middle": b, "stage_late": b})
    (row,) = ablations.verdicts(ds)
    sd = np.std(a - b, ddof=1)  # (middle and late are the same run here)
    z = stats.norm.ppf(1 - 0.05 / 4) + stats.norm.ppf(0.8)
    assert row.status == "inconclusive" and row.extra["n_to_resolve"] == math.ceil((z * sd / 0.05) ** 2)
    assert f"about {row.extra['n_to_resolve']} samples" in row.detail


def test_amdm_against_both_single_models_is_paired():
    n = 300
    # the single models' successes overlap AMDM's, differently: each difference is 0 or +1
    model1, model2 = ones(100, n), ones(0, 50) + ones(100, n - 50)
    amdm = ones(150, n)
    ds = fake({"model1": model1, "model2": model2, "amdm": amdm, "amdm_swapped": ones(20, n)})
    rows = {r.key: r for r in ablations.verdicts(ds)}
    assert rows["ablation_tables12"].status == "holds"
    assert rows["ablation_tables12"].value == pytest.approx(150 / n - 100 / n)
    assert rows["ablation_tables12"].interval == pytest.approx(t_interval(np.subtract(amdm, model2), 0.975))
    assert rows["ablation_tables12_swapped"].status == "violated"  # below model 1 on every pair it differs


def test_the_mean_variant_is_an_equivalence():
    same = ones(150, 400)
    (row,) = ablations.verdicts(fake({"amdm": same, "mean_at_aggregate": same}))
    assert row.status == "holds" and row.reference == 0.05 and row.interval[1] < 0.05
    (row,) = ablations.verdicts(fake({"amdm": same, "mean_at_aggregate": ones(300, 400)}))
    assert row.status == "violated" and row.value == pytest.approx(-0.375)
    rng = np.random.default_rng(1)
    a = (rng.random(48) < 0.4).astype(float)
    (row,) = ablations.verdicts(fake({"amdm": a, "mean_at_aggregate": 1 - a}))
    assert row.status in ("inconclusive", "violated") and row.n == 48


def test_eta_best_of_the_paper_range():
    etas = {0.0: ones(60, 300), 0.3: ones(150, 300), 0.5: ones(90, 300), 40.0: ones(290, 300)}
    ds = fake({f"eta_{e:g}": v for e, v in etas.items()})
    (row,) = ablations.verdicts(ds)
    # eta = 40 is outside [0, 0.5]: 0.3 is compared with 0 and 0.5 only
    assert row.status == "holds" and row.value == pytest.approx(60 / 300) and row.extra["rival"] == "eta_0.5"


@pytest.mark.parametrize("w", [0.5, 1 / math.sqrt(2)])
def test_the_earlier_rule_inflates_near_parallel_latents(w):
    # x' = w x1 + sqrt(1 - w^2) x2 keeps the norm only for orthogonal inputs: for x1 = x2 it
    # multiplies it by w + sqrt(1 - w^2) (sqrt(2) at w = 1/sqrt(2)), the divergence the ablation reports
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    out = geometry.orthogonal_mix([x, x.clone()], [w])
    np.testing.assert_allclose(geometry.norm(out) / geometry.norm(x), w + math.sqrt(1 - w * w), rtol=1e-12)
    # for exactly orthogonal inputs of equal norm it does keep the norm (the assumption it rests on)
    y = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    xf, yf = x.flatten(1), y.flatten(1)
    yf = yf - (yf * xf).sum(1, keepdim=True) / (xf * xf).sum(1, keepdim=True) * xf
    yf = yf * xf.norm(dim=1, keepdim=True) / yf.norm(dim=1, keepdim=True)
    kept = geometry.norm(geometry.orthogonal_mix([x, yf.reshape(x.shape)], [w])) / geometry.norm(x)
    np.testing.assert_allclose(kept, 1.0, rtol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_no_status_disagrees_with_its_interval(seed):
    # every comparison verdict, on random paired outcomes of every run: its status is its interval's decision
    rng = np.random.default_rng(seed)
    names = [s.name for s in ablations.settings(True)]
    u = rng.random(40)
    p = {n: rng.uniform(0.1, 0.9) for n in names}
    ds = fake({n: (np.where(rng.random(40) < 0.5, u, rng.random(40)) < p[n]).astype(float) for n in names})
    ds["max_norm_dev"] = ds.success * 0 + rng.random(len(names))
    checked = 0
    for row in ablations.verdicts(ds):
        if row.interval is None:
            continue
        decided = (stats_.decide_equivalence(row.interval, ablations.EQUIVALENCE_MARGIN)
                   if row.key == "ablation_mean_variant" else stats_.decide(row.interval))
        assert row.status == decided, row.key
        assert row.interval[0] <= row.value <= row.interval[1] and row.n == 40 and row.level >= 0.95 and row.test
        checked += 1
    assert checked == 9
