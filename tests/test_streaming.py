"""Analyses that stream a store's latents a slice of samples at a time (``common.streamed``):
``membership.prop32``, ``prop32_proof.proof``, ``flow_geometry.g1`` and ``mu_v`` and
``gaussianity.trajectory_gaussianity`` give the same values whatever the slice (``chunk``) as
read whole, with non-finite samples too; each reads no more than one slice of samples at a
time; and a bad ``chunk`` is refused in one line by ``common.sample_slices``."""

import numpy as np
import pytest
import xarray as xr

from amdm_geom.analyses import common
from amdm_geom.analyses.common import membership
from amdm_geom.analyses.flow import flow_geometry
from amdm_geom.analyses.gaussianity import gaussianity
from amdm_geom.analyses.prop32 import proof as prop32_proof
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.models.specs import GMMFamilySpec
from amdm_geom.probes import RunSettings, flow_pair
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, open_run
from tests.reference import assert_same_datasets

SHAPE, STEPS, AGG, SAMPLES, STORE_CHUNK = (2, 4, 4), 6, 3, 5, 2


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A GMM pair with sigma_t > 0 (Prop. 3.2 needs it), recorded in chunks of 2 samples (the last
    one short), and a stochastic flow pair with the cross terms."""
    tmp = tmp_path_factory.mktemp("streaming")
    fam = fine_grained_family(SHAPE, separation=6.0, seed=3)
    sampler = AMDMSampler([fam.model(name="a"), fam.model(name="b", perturb=0.1)],
                          [fam.condition(position=0), fam.condition(colour=1)],
                          SamplerConfig(num_inference_steps=STEPS, agg_steps=AGG, ddim_eta=1.0, eta=0.3))
    with sampler.recording(ZarrRecorder(tmp / "gmm.zarr")):
        sampler.sample(list(range(SAMPLES)), chunk_size=STORE_CHUNK)
    cfg = SamplerConfig(num_inference_steps=STEPS, agg_steps=AGG, record_cross_eps=True, flow_stochastic=True)
    spec = flow_pair.Spec(family=GMMFamilySpec(latent_shape=SHAPE), perturb=0.05, partner="flow", sampler=cfg,
                          run=RunSettings(batch=SAMPLES, seed=3, out=tmp / "flow.zarr", progress=False))
    return {"gmm": tmp / "gmm.zarr", "flow": flow_pair.run(spec, quiet=True)}


#: name -> (the function, the store it reads)
CASES = {"prop32": (membership.prop32, "gmm"), "proof": (prop32_proof.proof, "gmm"),
         "trajectory": (gaussianity.trajectory_gaussianity, "gmm"), "g1": (flow_geometry.g1, "flow"),
         "mu_v": (flow_geometry.mu_v, "flow")}


def assert_same(a: xr.Dataset, b: xr.Dataset):
    """Floats to 1e-12 relative, the rest exactly (``reference.assert_same_datasets``)."""
    assert_same_datasets(a, b, rtol=1e-12)


@pytest.fixture(scope="module")
def whole(stores):
    """Each function's result with the default ``chunk``, which reads these small stores in one
    slice: every block whole, as before streaming."""
    for path in stores.values():
        assert common.sample_slices(open_run(path), "z", None) == [slice(0, SAMPLES)]
    return {name: fn(stores[store]) for name, (fn, store) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_streamed_equals_the_whole_batch(stores, whole, name):
    fn, store = CASES[name]
    assert whole[name].sizes["step"] > 0
    for chunk in (1, 3):  # one sample a slice; slices of 3 and 2 across the store's chunks of 2
        assert_same(fn(stores[store], chunk=chunk), whole[name])


def test_the_stores_exercise_every_part(whole):
    res = whole["prop32"]
    assert {"in_domain", "in_domain_own", "in_domain_model1", "tau"} <= set(res.data_vars)  # a GMM partner
    assert (res.tau.values == res.tau.values[:, :1]).all()  # one threshold per step, over every slice
    assert "cond_term" in whole["g1"] and whole["mu_v"].sizes["model"] == 2
    assert whole["trajectory"].sizes["step"] == STEPS


def _with_nonfinite(path, var, k, model, sample) -> xr.Dataset:
    """The store, loaded, with one entry of ``var`` at step k for one model (None: no model dim)
    and one sample set to NaN."""
    ds = open_run(path).load()
    values = ds[var].values.copy()
    at = (k, sample) if model is None else (k, model, sample)
    values[at + (0,) * (values.ndim - len(at))] = np.nan
    ds[var] = (ds[var].dims, values)
    return ds


@pytest.mark.parametrize("name, var, model", [("prop32", "z_shift", 0), ("proof", "agg_z", None),
                                              ("trajectory", "z", 0), ("g1", "v", 1), ("mu_v", "mu", 0)])
def test_streamed_with_a_non_finite_sample(stores, whole, name, var, model):
    fn, store = CASES[name]
    whole = whole[name]
    k = int(whole.step.values[1])
    ds = _with_nonfinite(stores[store], var, k, model, 3)
    full = fn(ds)
    assert_same(fn(ds, chunk=2), full)
    first = next(v for v in ("radius", "moved", "ratio", "delta", "d0") if v in full)
    cell = full[first].sel(step=k, sample=3)
    if "model" in cell.dims:  # mu_v: only the model whose mu is NaN
        assert bool(np.isfinite(cell.sel(model=1))) and bool(np.isfinite(whole[first].sel(step=k, sample=3, model=0)))
        cell = cell.sel(model=0)
    assert bool(np.isnan(cell).all())
    if "finite" in full:
        assert not bool(full.finite.sel(step=k, sample=3)) and int((~full.finite).sum()) == 1
    others = full[first].where(full.sample != 3)
    np.testing.assert_allclose(others.values, whole[first].where(whole.sample != 3).values, rtol=1e-12)


@pytest.mark.parametrize("name", ["prop32", "proof", "g1", "mu_v"])
def test_reads_one_slice_of_samples_at_a_time(stores, name, monkeypatch):
    fn, store = CASES[name]
    module = {"prop32": membership, "proof": prop32_proof, "g1": flow_geometry, "mu_v": flow_geometry}[name]
    reads, real = [], common.latent_block

    def spy(ds, var, k, model, samples=slice(None)):
        block = real(ds, var, k, model, samples)
        reads.append(block.shape[0])
        return block

    monkeypatch.setattr(module, "latent_block", spy)
    fn(stores[store], chunk=2)
    assert reads and max(reads) == 2 and min(reads) == 1  # slices of 2, 2 and 1


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_chunk_is_refused_in_one_line(stores, name):
    fn, store = CASES[name]
    with pytest.raises(ValueError, match=r"^chunk must be a whole number of samples >= 1; got 0$"):
        fn(stores[store], chunk=0)
