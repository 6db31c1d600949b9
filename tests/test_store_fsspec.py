"""Trace stores at fsspec URLs (memory://, file://) and compressed stores (zstd, blosc): the same
run, bit for bit, as a local uncompressed store and as the in-memory cache; the ``complete``
flag; overwrite and refusals at URLs; one-line errors for bad URLs and compressors."""

import json
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from amdm_geom.core.spec import SpecError
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.sampling.config import RunSettings
from amdm_geom.store import (
    StoreError,
    ZarrRecorder,
    check_output_path,
    is_complete,
    is_trace_store,
    open_run,
    steps_completed,
)

SHAPE = (4, 8, 8)
STEPS, SEEDS = 6, [0, 1, 2]


class Boom(RuntimeError):
    pass


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family(SHAPE, separation=6.0, seed=4)


def make_sampler(fam):
    models = [fam.model(name="a"), fam.model(name="b")]
    conds = [fam.condition(position=1), fam.condition(colour=2)]
    return AMDMSampler(models, conds, SamplerConfig(num_inference_steps=STEPS, agg_steps=3, ddim_eta=1.0))


def record(fam, target, seeds=SEEDS, **kw):
    sampler = make_sampler(fam)
    with sampler.recording(ZarrRecorder(target, **kw)):
        sampler.sample(list(seeds))


@pytest.fixture(scope="module")
def cache(fam):
    """The independent reference: the same run recorded in memory (no zarr at all)."""
    return make_sampler(fam).run_with_cache(SEEDS)[1]


@pytest.fixture
def mem():
    """A fresh memory:// folder, removed afterwards (the memory file system lives as long as the process)."""
    fs, root = fsspec.filesystem("memory"), f"/amdm-test-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    if fs.exists(root):
        fs.rm(root, recursive=True)


def one_line(info) -> str:
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def assert_same_run(ds, cache):
    """Every data variable and coordinate of ``ds`` equals the cache's bit for bit (NaN where it has NaN)."""
    assert set(ds.data_vars) == set(cache.data_vars) and set(ds.coords) == set(cache.coords)
    for name in [*cache.data_vars, *cache.coords]:
        got, want = ds[name].values, cache[name].values
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if got.dtype.kind == "f":  # bit for bit, NaNs included
            assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_url_stores_equal_the_local_store_and_the_cache(fam, cache, mem, tmp_path):
    local = tmp_path / "local.zarr"
    targets = [local, f"{mem}/run.zarr", f"file://{tmp_path}/viafile.zarr"]
    for target in targets:
        record(fam, target)
        assert is_trace_store(target)
        ds = open_run(target)
        assert ds.encoding["source"] == str(target)
        assert ds.attrs["complete"] is True and is_complete(ds) and steps_completed(ds) == STEPS
        assert_same_run(ds, cache)
        assert_same_run(ds, open_run(local))
    # the memory store really lives in fsspec's memory file system, one object per chunk
    fs = fsspec.filesystem("memory")
    root = mem.removeprefix("memory://")
    doc = json.loads(fs.cat_file(f"{root}/run.zarr/zarr.json"))
    assert doc["attributes"]["complete"] is True
    assert fs.exists(f"{root}/run.zarr/z/c.0.1.0.0.0.0")  # step 0, model 1, the sample block
    assert (tmp_path / "viafile.zarr" / "zarr.json").is_file()  # file:// is the local path


@pytest.mark.parametrize("compressor", ["zstd", "blosc", ZstdCodec(level=3)])
def test_compressed_stores_read_back_equal(fam, cache, mem, tmp_path, compressor):
    local, url = tmp_path / "c.zarr", f"{mem}/c.zarr"
    for target in (local, url):
        record(fam, target, compressor=compressor)
        assert_same_run(open_run(target), cache)
    codecs = json.loads((local / "z" / "zarr.json").read_text())["codecs"]
    names = [c["name"] for c in codecs]
    assert names[0] == "bytes" and names[1] == ("blosc" if compressor == "blosc" else "zstd")
    if not isinstance(compressor, str):
        assert codecs[1]["configuration"]["level"] == 3
    # compressed chunks are not raw: a raw chunk is 3 samples x 4x8x8 float32 = 3072 bytes
    chunk = local / "z" / "c.0.0.0.0.0.0"
    assert chunk.is_file() and chunk.stat().st_size != 3 * 4 * 8 * 8 * 4


def test_a_run_that_raises_midway_is_incomplete(fam, cache, mem):
    url = f"{mem}/broken.zarr"
    sampler = make_sampler(fam)

    def fail(name, step, value):
        if step == 4:
            raise Boom("injected")

    with sampler.hooks(fail, names_filter="model0.eps"):
        with pytest.raises(Boom):
            with sampler.recording(ZarrRecorder(url, compressor="zstd")):
                sampler.sample(SEEDS)
    ds = open_run(url)
    assert ds.attrs["complete"] is False and not is_complete(ds) and steps_completed(ds) == 4
    assert_same_run(ds.isel(step=slice(0, 4)), cache.isel(step=slice(0, 4)))
    assert np.isnan(ds.z.isel(step=slice(5, None)).values).all()


def test_url_overwrite_and_refusals(fam, cache, mem):
    url = f"{mem}/run.zarr"
    record(fam, url, seeds=[5])
    with pytest.raises(FileExistsError) as info:
        ZarrRecorder(url)
    assert one_line(info) == f"trace store {url} exists; pass overwrite=True (--overwrite) to replace it"
    record(fam, url, overwrite=True)  # the old store is deleted at the start, the new run written
    assert_same_run(open_run(url), cache)
    assert open_run(url).attrs["seeds"] == SEEDS
    # a foreign zarr group and a plain object are never replaced
    fs = fsspec.filesystem("memory")
    zarr.open_group(zarr.storage.FsspecStore.from_url(f"{mem}/foreign.zarr"), mode="w-", zarr_format=3,
                    attributes={"creator": "someone"})
    fs.pipe_file(f"{mem.removeprefix('memory://')}/plain.zarr", b"data")
    for name, why in (("foreign.zarr", "attribute 'spec' missing"), ("plain.zarr", "a file, not a folder")):
        target = f"{mem}/{name}"
        with pytest.raises(StoreError) as info:
            ZarrRecorder(target, overwrite=True)
        assert one_line(info) == f"refusing to overwrite {target}: not an amdm-geom trace store ({why})"
        with pytest.raises(FileExistsError):
            check_output_path(target)
        assert not is_trace_store(target)
    assert fs.cat_file(f"{mem.removeprefix('memory://')}/plain.zarr") == b"data"
    with pytest.raises(StoreError) as info:
        open_run(f"{mem}/foreign.zarr")
    assert "is not an amdm-geom trace store: attribute 'spec' missing" in one_line(info)
    with pytest.raises(FileNotFoundError) as info:
        open_run(f"{mem}/nope.zarr")
    assert one_line(info) == f"no trace store at {mem}/nope.zarr"


def test_bad_urls_and_compressors_are_one_line_errors(mem, tmp_path):
    for bad in ("nosuchproto://bucket/run.zarr", "simplecache::nosuchproto://x.zarr"):
        for call in (lambda: ZarrRecorder(bad), lambda: check_output_path(bad), lambda: open_run(bad)):
            with pytest.raises(StoreError) as info:
                call()
            assert "Protocol not known: nosuchproto" in one_line(info) and "accepted: a local path" in one_line(info)
        assert not is_trace_store(bad)
    with pytest.raises(StoreError) as info:
        ZarrRecorder("memory://")
    assert one_line(info) == "cannot write a trace store at memory://: name a folder for it, such as memory://run.zarr"
    with pytest.raises(ValueError) as info:
        ZarrRecorder(tmp_path / "x.zarr", storage_options={"anon": True})
    assert "accepted: none for local paths" in one_line(info)
    with pytest.raises(ValueError) as info:
        ZarrRecorder(f"{mem}/x.zarr", compressor="lz4")
    assert one_line(info).startswith("compressor 'lz4' is not known; accepted: 'none', 'zstd', 'blosc'")
    assert not (tmp_path / "x.zarr").exists()


def test_run_settings_out_and_compressor():
    assert RunSettings(out="runs/a.zarr").out == Path("runs/a.zarr")
    url = RunSettings(out="memory://runs/a.zarr", compressor="zstd")
    assert url.out == "memory://runs/a.zarr" and url.compressor == "zstd"
    assert RunSettings.model_validate_json(url.model_dump_json()) == url
    assert RunSettings().compressor == "none"
    with pytest.raises(SpecError) as info:
        RunSettings(out="nosuchproto://x.zarr")
    assert one_line(info).startswith("out has protocol 'nosuchproto' that fsspec cannot use (Protocol not known")
    with pytest.raises(SpecError) as info:
        RunSettings(out=3)
    assert one_line(info) == "out must be a path or an fsspec URL (memory://..., s3://bucket/...); got 3"
    with pytest.raises(SpecError) as info:
        RunSettings(compressor="lz4")
    assert one_line(info) == "compressor must be one of none, zstd, blosc; got 'lz4'"


def test_a_probe_runs_into_a_url(mem):
    from amdm_geom.probes import gmm_pair
    from amdm_geom.store import spec_of

    spec = gmm_pair.Spec(family={"latent_shape": SHAPE}, sampler={"steps": 3},
                         run={"batch": 2, "out": f"{mem}/probe.zarr", "compressor": "blosc", "progress": False})
    out = gmm_pair.run(spec, quiet=True)
    assert out == f"{mem}/probe.zarr"
    ds = open_run(out)
    assert is_complete(ds) and spec_of(ds, gmm_pair.Spec) == spec
    again = gmm_pair.build(spec).run_with_cache(spec.run.seeds)[1]
    assert_same_run(ds, again)
