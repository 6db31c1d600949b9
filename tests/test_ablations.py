"""The ablation runs and their verdict rules (the numbers themselves are recomputed from the
stores in tests/test_validate.py)."""

import math

import numpy as np
import pytest
import torch
import xarray as xr

from amdm_geom import geometry
from amdm_geom.analyses import ablation_runs, ablations
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
    assert {float(s.params["eta"]) for s in full.values() if s.group == "table4"} >= {0.0, 0.3, 0.5, 40.0}
    # each run is a typed spec: its models, not role strings
    cross = full["cross_ve"]
    assert [(m.attribute, m.sde) for m in cross.models] == [("position", "scaled_linear"), ("colour", "ve")]
    assert cross.sampler.allow_schedule_mismatch and full["n3_style"].family.n_styles == 3


def test_a_run_spec_round_trips_and_refuses_bad_models():
    spec = ablations.settings(True)[0]
    assert ablation_runs.Spec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match=r"^models\.0\.attribute style needs a family with styles > 1; got 'style'$"):
        spec.replace(models=(spec.models[0].replace(attribute="style"),))
    with pytest.raises(ValueError, match=r"^models\.0\.sde must be one of scaled_linear, linear, cosine, ve; "
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


def fake(success: dict, group: dict) -> xr.Dataset:
    """A compute()-like dataset with given per-sample masses (to test the verdict rules)."""
    names = list(success)
    mass = np.stack([np.asarray(success[n], dtype=float) for n in names])
    ds = xr.Dataset({"mass": (("run", "sample"), mass)},
                    coords={"run": names, "group": ("run", [group[n] for n in names]),
                            "label": ("run", [f"{n}: x" for n in names])}, attrs={"quick": 1})
    ds["success"] = ds.mass.mean("sample")
    ds["success_se"] = ds.mass.std("sample", ddof=1) / math.sqrt(mass.shape[1])
    ds["hard_rate"] = ds.success
    ds["max_norm_dev"] = ds.success * 0
    ds["min_logp_z"] = ds.success * 0
    return ds


def test_ties_do_not_count_as_best():
    same = [1.0, 0.0, 1.0, 0.0]
    ds = fake({"stage_early": same, "stage_middle": same, "stage_late": [0.0] * 4},
              {"stage_early": "table3", "stage_middle": "table3", "stage_late": "table3"})
    (row,) = ablations.verdicts(ds)
    assert row.status == "violated" and row.value == 0.0
    ds = fake({"stage_early": [1, 1, 1, 0], "stage_middle": same, "stage_late": [0.0] * 4},
              {"stage_early": "table3", "stage_middle": "table3", "stage_late": "table3"})
    (row,) = ablations.verdicts(ds)
    assert row.status == "holds" and row.value == pytest.approx(0.25)


def test_amdm_against_the_better_single_model_is_paired():
    g = {n: "tables12" for n in ("model1", "model2", "amdm", "amdm_swapped")}
    ds = fake({"model1": [1, 0, 0, 0], "model2": [0, 0, 0, 0], "amdm": [1, 1, 0, 0], "amdm_swapped": [1, 0, 0, 0]}, g)
    rows = {r.key: r for r in ablations.verdicts(ds)}
    assert rows["ablation_tables12"].status == "holds" and rows["ablation_tables12"].value == pytest.approx(0.25)
    assert rows["ablation_tables12_swapped"].status == "violated"


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
