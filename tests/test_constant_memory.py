"""Analyses in constant memory (issue 15, point 3) and ``validate --keep-runs`` (point 4a).

``norm_angle.prop31`` streams each step's latents a slice of samples at a time: checked against
the whole-batch computation (every value equal, bit for bit, also with non-finite samples), by
what it reads (never more than one slice of samples per read), and ``prune_runs`` on a folder
of real trace stores."""

import shutil

import numpy as np
import pytest
import xarray as xr

from amdm_geom.analyses import common
from amdm_geom.analyses.prop31 import norm_angle
from amdm_geom.app import cli
from amdm_geom.app.validate import ValidateCommand, prune_runs
from amdm_geom.core.spec import SpecError
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, is_trace_store, open_run
from tests.reference import assert_same_datasets

SHAPE, STEPS, S, SAMPLES, STORE_CHUNK = (2, 4, 4), 6, 3, 5, 2


def make_store(path, *, after_window: bool = True):
    """A small two-model store recorded in chunks of ``STORE_CHUNK`` samples (the last one short)."""
    fam = fine_grained_family(SHAPE, separation=6.0, seed=3)
    models = [fam.model(name="a"), fam.model(name="b", perturb=0.1)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    sampler = AMDMSampler(models, conds, SamplerConfig(
        num_inference_steps=STEPS, agg_steps=S, ddim_eta=1.0, record_cross_eps=True,
        continue_after_window=after_window))
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample(list(range(SAMPLES)), chunk_size=STORE_CHUNK)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cm") / "run.zarr")


def assert_same(a: xr.Dataset, b: xr.Dataset):
    """Bit for bit, but for floats to 1e-14 relative (an angle may differ in its last bit with the batch
    size): ``reference.assert_same_datasets``."""
    assert_same_datasets(a, b, rtol=1e-14)


def test_store_is_chunked_by_samples(store):
    ds = open_run(store)
    assert common.store_sample_chunk(ds, "z_next") == STORE_CHUNK
    built = xr.Dataset({"z_next": (ds.z_next.dims, ds.z_next.values)})  # made in memory: one block
    assert common.store_sample_chunk(built, "z_next") == SAMPLES


def test_sample_slices_cover_every_sample_in_whole_store_chunks(store, monkeypatch):
    ds = open_run(store)
    n = int(np.prod(SHAPE))
    assert common.sample_slices(ds, "z_next") == [slice(0, SAMPLES)]  # all fit CHUNK_BYTES
    monkeypatch.setattr(common, "CHUNK_BYTES", 3 * 8 * n)  # room for 3 samples: one store chunk of 2
    assert common.sample_slices(ds, "z_next") == [slice(0, 2), slice(2, 4), slice(4, 5)]
    monkeypatch.setattr(common, "CHUNK_BYTES", 1)  # never less than one store chunk
    assert common.sample_slices(ds, "z_next") == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert common.sample_slices(ds, "z_next", 3) == [slice(0, 3), slice(3, 5)]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="chunk must be a whole number of samples >= 1; got"):
            common.sample_slices(ds, "z_next", bad)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_streamed_prop31_equals_the_whole_batch(store, chunk):
    whole = norm_angle.prop31(store, chunk=SAMPLES)
    assert_same(norm_angle.prop31(store, chunk=chunk), whole)
    assert_same(norm_angle.prop31(store), whole)
    # and against the values computed here from the whole blocks at one step
    ds = open_run(store)
    a = ds.z_next.isel(step=2, model=0).values.astype(np.float64).reshape(SAMPLES, -1)
    b = ds.z_next.isel(step=2, model=1).values.astype(np.float64).reshape(SAMPLES, -1)
    np.testing.assert_allclose(whole.delta.sel(step=2), np.linalg.norm(a - b, axis=1), rtol=1e-12)


def test_streamed_prop31_with_non_finite_samples(store):
    ds = open_run(store).load()
    z = ds["eps"].values.copy()
    z[2, 1, 3, 0, 0, 0] = np.nan  # sample 3 at step 2 (model 2's eps)
    z[4, 0, 0, 1, 1, 1] = np.inf  # sample 0 at step 4
    ds["eps"] = (ds["eps"].dims, z)
    whole = norm_angle.prop31(ds)
    assert_same(norm_angle.prop31(ds, chunk=2), whole)
    fin = whole.finite
    assert not bool(fin.sel(step=2, sample=3)) and not bool(fin.sel(step=4, sample=0))
    assert int((~fin).sum()) == 2 and np.isnan(whole.delta.sel(step=2, sample=3))
    assert np.isfinite(whole.delta.sel(step=2, sample=2))


def test_prop31_reads_one_slice_of_samples_at_a_time(store, monkeypatch):
    reads = []
    real = common.latent_block

    def spy(ds, var, k, model, samples=slice(None)):
        block = real(ds, var, k, model, samples)
        reads.append((var, k, model, block.shape[0]))
        return block

    monkeypatch.setattr(norm_angle, "latent_block", spy)
    res = norm_angle.prop31(store, chunk=2)
    assert reads and max(r[3] for r in reads) == 2
    for k in res.step.values:  # every sample of every block read once per step (z at step 0 twice: z_T too)
        for var in ("z_next", "z", "eps", "noise"):
            for m in (0, 1):
                once = 2 if (var, k) == ("z", 0) else 1
                assert sum(r[3] for r in reads if r[:3] == (var, k, m)) == once * SAMPLES


def test_both_sampled_reads_slices_and_finds_the_written_steps(tmp_path):
    path = make_store(tmp_path / "window.zarr", after_window=False)
    ds = open_run(path)
    expected = [k for k in range(STEPS) if all(not np.isnan(ds.z_next.isel(step=k, model=m).values).all()
                                               for m in (0, 1))]
    assert 0 < len(expected) < STEPS  # the models stop after the window
    assert common.both_sampled(ds, (0, 1), 1) == expected == common.both_sampled(ds, (0, 1))
    assert list(norm_angle.prop31(path, chunk=1).step.values) == expected


def test_compute_passes_chunk(store):
    tree = norm_angle.compute({"run": store}, chunk=1)
    assert_same(tree["run/results"].to_dataset(), norm_angle.prop31(store))


# --------------------------------------------------------------------------------------------
# validate --keep-runs


@pytest.fixture()
def runs(tmp_path, store):
    """A --runs folder as validate leaves it: two probe stores, two ablation stores, their lock
    files, and a foreign folder and file in the ablations' folder."""
    runs = tmp_path / "runs"
    (runs / "ablations").mkdir(parents=True)
    for path in (runs / "p1.zarr", runs / "p2.zarr", runs / "ablations" / "a1.zarr", runs / "ablations" / "a2.zarr"):
        shutil.copytree(store, path)
        (path.parent / f".{path.name}.lock").write_text("1")
    (runs / "ablations" / "foreign.zarr").mkdir()
    (runs / "other.zarr").mkdir()
    return runs


def left(runs):
    return sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.parent.suffix != ".zarr"
                  and "/" not in str(p.relative_to(runs)).removeprefix("ablations/"))


def test_keep_all_removes_nothing(runs):
    before = left(runs)
    assert prune_runs(runs, "all", ["p1", "p2"]) == []
    assert left(runs) == before


def test_keep_report_removes_the_ablation_stores_only(runs):
    removed = prune_runs(runs, "report", ["p1", "p2"])
    assert sorted(p.name for p in removed) == ["a1.zarr", "a2.zarr"]
    assert left(runs) == [".p1.zarr.lock", ".p2.zarr.lock", "ablations", "ablations/foreign.zarr", "other.zarr",
                          "p1.zarr", "p2.zarr"]
    assert is_trace_store(runs / "p1.zarr") and is_trace_store(runs / "p2.zarr")


def test_keep_none_removes_every_store_validate_wrote(runs):
    removed = prune_runs(runs, "none", ["p1", "p2", "never_run"])
    assert sorted(p.name for p in removed) == ["a1.zarr", "a2.zarr", "p1.zarr", "p2.zarr"]
    assert left(runs) == ["ablations", "ablations/foreign.zarr", "other.zarr"]  # not trace stores: kept
    shutil.rmtree(runs / "ablations" / "foreign.zarr")
    assert prune_runs(runs, "none", []) == [] and not (runs / "ablations").exists()  # the empty folder goes


def test_keep_runs_refuses_other_values(runs):
    with pytest.raises(ValueError, match=r"keep must be one of none, report, all; got 'some'"):
        prune_runs(runs, "some", [])
    with pytest.raises((SpecError, ValueError), match="must be one of none, report, all"):
        ValidateCommand(keep_runs="some")
    assert ValidateCommand().keep_runs == "report"
    assert cli.main(["validate", "--keep-runs", "bogus", "--runs", str(runs), "--report", str(runs / "r")]) != 0
