"""The trace store: schema, the recorded values against eq. (4), determinism, interrupted runs,
overwrite protection, dtypes, lazy reading, and the in-memory cache matching the store."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from amdm_geom.core.schedules import ddim_coefficients
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import MODEL_QUANTITIES, AMDMSampler, MemoryRecorder, SamplerConfig
from amdm_geom.store import ZarrRecorder, built_of, open_run, sampler_config

SHAPE = (4, 8, 8)
STEPS, S = 10, 4


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family(SHAPE, separation=6.0, seed=4)


def make_sampler(fam, dtype=torch.float32, **cfg):
    models = [fam.model(dtype=dtype, name="a"), fam.model(dtype=dtype, name="b")]
    conds = [fam.condition(position=1), fam.condition(colour=2)]
    return AMDMSampler(models, conds, SamplerConfig(num_inference_steps=STEPS, agg_steps=S, **cfg))


def record(sampler, path, seeds=(0, 1, 2), **kw):
    with sampler.recording(ZarrRecorder(path, **kw)) as rec:
        sampler.sample(list(seeds))
    return rec


@pytest.fixture(scope="module")
def store(fam, tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "pair.zarr"
    record(make_sampler(fam, ddim_eta=1.0), path)
    return path


def test_schema_dims_coords_and_attrs(store):
    ds = open_run(store)
    for q in MODEL_QUANTITIES:
        assert ds[q].dims == ("step", "model", "sample", "channel", "height", "width")
        assert ds[q].shape == (STEPS, 2, 3, *SHAPE)
    assert ds["agg_z"].dims == ("step", "sample", "channel", "height", "width")
    for dim in ds.dims:
        assert dim in ds.coords
    assert ds.attrs["complete"] is True and ds.attrs["steps_completed"] == STEPS
    assert ds.attrs["dtype"] == "float32" and ds["z"].dtype == np.float32
    assert ds.attrs["seeds"] == [0, 1, 2] and list(ds.seed.values) == [0, 1, 2]
    versions = json.loads(ds.attrs["versions"])
    assert {"torch", "diffusers", "xarray", "zarr", "amdm_geom"} <= set(versions)
    assert ds.attrs["creation_library"].startswith("amdm-geom") and ds.attrs["created_at"]
    assert sampler_config(ds).agg_steps == S and built_of(ds).models[1]["name"] == "b"
    assert list(ds.aggregated.values) == [True] * S + [False] * (STEPS - S)


def test_step_coordinates_equal_ddim_coefficients(store, fam):
    ds = open_run(store)
    c = ddim_coefficients(fam.model().scheduler, STEPS, 1.0)
    for name in ("t", "t_prev", "alpha_bar", "alpha_bar_prev", "A", "B", "sigma"):
        np.testing.assert_array_equal(ds[name].values, c[name].values)
        if name not in ("t", "t_prev"):
            np.testing.assert_array_equal(ds[f"model_{name}"].isel(model=1).values, c[name].values)


def test_recorded_values_satisfy_eq4(store):
    ds = open_run(store).load()
    z, eps, mu, noise, z_next, x0 = (ds[v].astype("float64") for v in ("z", "eps", "mu", "noise", "z_next", "x0"))
    valid = ~np.isnan(z)
    np.testing.assert_allclose((mu - (ds.model_A * z + ds.model_B * eps)).values[valid], 0, atol=2e-5)
    np.testing.assert_allclose((z_next - (mu + noise)).values[valid], 0, atol=1e-5)
    # x0 = (z - sqrt(1 - abar) eps) / sqrt(abar)
    x0_ref = (z - np.sqrt(1 - ds.model_alpha_bar) * eps) / np.sqrt(ds.model_alpha_bar)
    np.testing.assert_allclose(x0.values[valid], x0_ref.values[valid], rtol=1e-4, atol=1e-3)
    # noise = sigma xi has the size sigma sqrt(n) of DDPM noise
    n = np.prod(SHAPE)
    noise_norm = np.sqrt((noise.isel(step=slice(0, S)) ** 2).sum(("channel", "height", "width")))
    ratio = noise_norm / (ds.model_sigma.isel(step=slice(0, S)) * np.sqrt(n))
    assert float(np.abs(ratio - 1).max()) < 0.35


def test_shift_and_aggregate_are_consistent(store):
    ds = open_run(store).load()
    agg = ds.agg_z.isel(step=slice(0, S)).values.astype(np.float64)
    for i in range(2):
        mu_s = ds.mu_shift.isel(step=slice(0, S), model=i).values.astype(np.float64)
        z_s = ds.z_shift.isel(step=slice(0, S), model=i).values.astype(np.float64)
        r_before = np.linalg.norm((agg - mu_s).reshape(S, 3, -1), axis=2)
        r_after = np.linalg.norm((z_s - mu_s).reshape(S, 3, -1), axis=2)
        np.testing.assert_allclose(r_before - r_after, 0.3, atol=1e-4)  # eq. (7) moves by eta
        # the shifted point starts the next step (model 1 stops after the window)
        last = S + 1 if i == 0 else S
        np.testing.assert_array_equal(ds.z.isel(step=slice(1, last), model=i).values, z_s[: last - 1])


def test_models_that_stop_leave_nan(store):
    ds = open_run(store)
    assert np.isnan(ds.z.isel(model=1, step=slice(S, None)).values).all()
    assert not np.isnan(ds.z.isel(model=0).values).any()
    assert np.isnan(ds.agg_z.isel(step=slice(S, None)).values).all()


def test_same_config_and_seed_give_identical_arrays(fam, store, tmp_path):
    record(make_sampler(fam, ddim_eta=1.0), tmp_path / "again.zarr")
    a, b = open_run(store), open_run(tmp_path / "again.zarr")
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values)


def test_memory_cache_equals_the_store(fam, store):
    _, cache = make_sampler(fam, ddim_eta=1.0).run_with_cache([0, 1, 2])
    ds = open_run(store).load()
    for v in ds.data_vars:
        np.testing.assert_array_equal(cache[v].values, ds[v].values)
    for c in ds.coords:
        np.testing.assert_array_equal(cache[c].values, ds[c].values)


def test_open_run_is_lazy(store):
    ds = open_run(store)
    assert not isinstance(ds["z"].variable._data, np.ndarray)


class Boom(RuntimeError):
    pass


def test_interrupted_run_leaves_a_readable_incomplete_store(fam, store, tmp_path):
    sampler = make_sampler(fam, ddim_eta=1.0)
    real, calls = sampler.models[0], {"n": 0}

    class Failing:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, z, t, cond):
            calls["n"] += 1
            if calls["n"] == 7:  # model 0's 7th call: during step 6
                raise Boom("injected")
            return real(z, t, cond)

    sampler.models[0] = Failing()
    path = tmp_path / "broken.zarr"
    with pytest.raises(Boom):
        record(sampler, path)
    ds = open_run(path)
    assert ds.attrs["complete"] is False and ds.attrs["steps_completed"] == 6
    full = open_run(store)
    for v in ds.data_vars:
        np.testing.assert_array_equal(ds[v].isel(step=slice(0, 6)).values, full[v].isel(step=slice(0, 6)).values)
    assert np.isnan(ds.z.isel(step=slice(7, None)).values).all()


def test_existing_store_is_not_overwritten_unless_asked(fam, store, tmp_path):
    before = open_run(store).attrs["created_at"]
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True") as info:
        ZarrRecorder(store)
    assert "\n" not in str(info.value)
    path = tmp_path / "x.zarr"
    record(make_sampler(fam), path, seeds=(0,))
    record(make_sampler(fam), path, seeds=(1, 2), overwrite=True)
    assert open_run(path).sizes["sample"] == 2
    assert open_run(store).attrs["created_at"] == before


def test_names_filter_and_float16(fam, tmp_path):
    path = tmp_path / "half.zarr"
    record(make_sampler(fam, dtype=torch.float16), path, names_filter=["model*.z", "agg.z"])
    ds = open_run(path)
    assert set(ds.data_vars) == {"z", "agg_z"}
    assert ds.z.dtype == np.float16 and ds.attrs["dtype"] == "float16"
    assert np.isfinite(ds.z.isel(model=0).values).all()


def test_store_dtype_is_explicit_and_said(fam, tmp_path):
    path = tmp_path / "f64.zarr"
    record(make_sampler(fam), path, store_dtype=torch.float64, names_filter="model0.z")
    ds = open_run(path)
    assert ds.z.dtype == np.float64 and ds.attrs["dtype"] == "float64"


def test_open_run_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trace store at"):
        open_run(tmp_path / "nope.zarr")


def test_memory_recorder_records_one_run(fam):
    sampler = make_sampler(fam)
    rec = MemoryRecorder()
    with sampler.recording(rec):
        sampler.sample([0])
        with pytest.raises(RuntimeError, match="one run"):
            sampler.sample([1])
    assert isinstance(rec.dataset(), xr.Dataset)
