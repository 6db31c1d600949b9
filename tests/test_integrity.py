"""Issue 22, part 1: a store proves its own integrity. Chunks zeroed, truncated, deleted or an
array shortened, in every variable of a trace store and of a result store, are found before any
number is read, named in one line (store, variable, chunk), and no analysis holds on them.

The checksum is checked against google-crc32c directly (not the code under test), and the
damaged stores are made with plain file operations, as a user's disk or hand would."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr

from amdm_geom.app.runner import analyze
from amdm_geom.app.runner.output import open_result, write_result
from amdm_geom.core.verdicts import Verdict
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import DamagedStoreError, ZarrRecorder, open_run, verify_run
from tests import clirun

STEPS = 6


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A complete DDPM-style run (eta = 1: every hook written) of two GMM models: 6 steps, the
    window 4, 4 samples, latents 4x8x8."""
    path = tmp_path_factory.mktemp("integrity") / "good.zarr"
    sampler = make_sampler((4, 8, 8), STEPS, 4)
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample([0, 1, 2, 3])
    return path


def make_sampler(shape, steps, agg_steps, eta=1.0) -> AMDMSampler:
    fam = fine_grained_family(shape, separation=6.0, seed=4)
    models = [fam.model(name="a"), fam.model(name="b")]
    conds = [fam.condition(position=1), fam.condition(colour=2)]
    return AMDMSampler(models, conds, SamplerConfig(num_inference_steps=steps, agg_steps=agg_steps, ddim_eta=eta))


def copy(good: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(good, out)
    return out


def data_variables(path: Path) -> list[str]:
    return sorted(open_run(path).data_vars)


def first_chunk(path: Path, var: str, step: int = 1) -> Path:
    chunks = sorted(p for p in (path / var).iterdir() if p.name.startswith(f"c.{step}."))
    return chunks[0]


def zero(chunk: Path) -> None:
    with open(chunk, "r+b") as fh:  # dd if=/dev/zero bs=4096 count=1 conv=notrunc
        fh.write(b"\0" * min(4096, chunk.stat().st_size))


def truncate(chunk: Path) -> None:
    os.truncate(chunk, chunk.stat().st_size // 3)


def shorten(path: Path, steps: int = 3) -> None:
    """Every array's step length cut in its zarr.json, the attributes still saying complete."""
    for meta in path.glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        dims = doc.get("dimension_names") or []
        if "step" in dims:
            doc["shape"][dims.index("step")] = steps
            meta.write_text(json.dumps(doc))


def test_every_chunk_ends_with_its_crc32c(good):
    """The last 4 bytes of each chunk file are the CRC-32C (google-crc32c, little endian) of the
    rest, and the rest is the float32 latent itself."""
    ds = open_run(good)
    for var in data_variables(good):
        chunk = first_chunk(good, var, step=0)
        data = chunk.read_bytes()
        assert int.from_bytes(data[-4:], "little") == google_crc32c.value(data[:-4])
        k, *idx = (int(i) for i in chunk.name.split(".")[1:3])
        sel = {"step": k, "model": idx[0]} if "model" in ds[var].dims else {"step": k}
        np.testing.assert_array_equal(np.frombuffer(data[:-4], "<f4"), ds[var].isel(sel).values.ravel())


DAMAGE = {"zeroed": zero, "truncated": truncate, "deleted": Path.unlink}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_chunk_in_any_variable_is_named(good, tmp_path, kind):
    """For every variable an analysis reads: the damage is found by verify_run (and, but for a
    zeroed chunk of the right size, by open_run before anything is read), in one line naming the
    store, the variable and the chunk."""
    for var in data_variables(good):
        path = copy(good, tmp_path, f"{kind}_{var}.zarr")
        chunk = first_chunk(path, var)
        DAMAGE[kind](chunk)
        with pytest.raises(DamagedStoreError) as info:
            verify_run(path)
        text = str(info.value)
        assert "\n" not in text and str(path) in text and f"'{var}'" in text and chunk.name in text, text
        if kind != "zeroed":
            with pytest.raises(DamagedStoreError, match=chunk.name):
                open_run(path)
        else:  # zarr itself refuses the zeroed chunk when it is read
            ds = open_run(path)
            with pytest.raises(ValueError, match="checksum"):
                ds[var].values
        shutil.rmtree(path)


def test_deleted_steps_are_missing_not_unwritten(good, tmp_path):
    """`rm miss.zarr/*/c.[345].*` with the attributes still "complete": found, not read as NaN."""
    path = copy(good, tmp_path, "miss.zarr")
    for chunk in path.glob("*/c.[345].*"):
        chunk.unlink()
    with pytest.raises(DamagedStoreError, match=r"chunk c\.3\..*missing"):
        open_run(path)


def test_a_shortened_store_is_damaged_not_complete(good, tmp_path):
    """Every array cut to 3 steps while the attributes say 6, complete: the recorded plan and the
    step count disagree with the arrays (never clipped to what is there)."""
    path = copy(good, tmp_path, "short.zarr")
    shorten(path)
    with pytest.raises(DamagedStoreError, match=r"shape \(3,.*plan recorded \(6,"):
        open_run(path)


def test_a_damaged_coordinate_is_named(good, tmp_path):
    path = copy(good, tmp_path, "coord.zarr")
    (path / "sigma" / "c" / "0").write_bytes(b"\0" * 8)
    with pytest.raises(DamagedStoreError, match="'sigma', chunk c/0"):
        open_run(path)


def test_an_intact_store_verifies_and_a_compressed_one_too(good, tmp_path):
    assert verify_run(good) is True
    sampler = make_sampler((4, 4, 4), 4, 2)
    path = tmp_path / "zstd.zarr"
    with sampler.recording(ZarrRecorder(path, compressor="zstd")):
        sampler.sample([0, 1])
    assert verify_run(path) is True
    chunk = first_chunk(path, "z_next")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(DamagedStoreError, match=f"'z_next', chunk {chunk.name}: checksum mismatch"):
        verify_run(path)


def test_a_url_store_is_checked_too(good):
    """A memory:// store: the same checksums and the same missing-chunk check through fsspec."""
    import fsspec

    sampler = make_sampler((4, 4, 4), 3, 2)
    url = "memory://integrity/run.zarr"
    with sampler.recording(ZarrRecorder(url)):
        sampler.sample([0])
    assert verify_run(url) is True
    fs = fsspec.filesystem("memory")
    victim = sorted(p for p in fs.find("/integrity/run.zarr") if "/z_next/c." in p)[0]
    fs.rm(victim)
    with pytest.raises(DamagedStoreError, match="'z_next', chunk c.*missing"):
        open_run(url)
    fs.rm("/integrity", recursive=True)


def legacy_copy(good: Path, tmp_path: Path) -> Path:
    """The store as amdm-geom wrote it before checksums: no crc32c codec, chunks without their 4
    bytes, no integrity attributes."""
    path = copy(good, tmp_path, "legacy.zarr")
    for meta in path.glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        doc["codecs"] = [c for c in doc["codecs"] if c["name"] != "crc32c"]
        meta.write_text(json.dumps(doc))
    for chunk in path.glob("*/c*"):
        for f in [chunk] if chunk.is_file() else chunk.rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[:-4])
    root = json.loads((path / "zarr.json").read_text())
    for key in ("integrity", "written"):
        root["attributes"].pop(key)
    (path / "zarr.json").write_text(json.dumps(root))
    return path


def test_a_store_written_before_checksums_still_opens_said_once(good, tmp_path, caplog):
    path = legacy_copy(good, tmp_path)
    with caplog.at_level(logging.WARNING, logger="amdm_geom.store"):
        ds = open_run(path)
        open_run(path)
    said = [r.getMessage() for r in caplog.records if "before chunk checksums" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0]
    np.testing.assert_array_equal(ds.z_next.values, open_run(good).z_next.values)
    assert verify_run(path) is False  # nothing more can be verified
    shorten(path)  # but a count beyond the arrays is still refused
    with pytest.raises(DamagedStoreError, match="6 steps recorded as completed but its arrays hold 3"):
        from amdm_geom.store import steps_completed

        steps_completed(open_run(path))


# --------------------------------------------------------------------------------------------
# verdicts never hold on a damaged store


def store_analyses() -> list[str]:
    from amdm_geom.app.runner.registry import analysis_names, load_analysis

    return [n for n in analysis_names() if load_analysis(n).stores == "required"]


@pytest.fixture(scope="module")
def damaged(good, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("damaged")
    out = {}
    for kind, fn in DAMAGE.items():
        path = copy(good, tmp, f"{kind}.zarr")
        fn(first_chunk(path, "z_next"))
        out[kind] = path
    out["shortened"] = copy(good, tmp, "shortened.zarr")
    shorten(out["shortened"])
    return out


@pytest.mark.parametrize("name", store_analyses())
def test_no_analysis_holds_on_a_damaged_store(damaged, name):
    """Every analysis that reads trace stores, on each kind of damage: every verdict inconclusive,
    its detail starting "damaged store:" and naming the chunk's store."""
    for kind, path in damaged.items():
        outcome = analyze(name, {kind: path}, quick=True, figures=False)
        assert outcome.verdicts, (name, kind)
        for v in outcome.verdicts:
            assert v.status == "inconclusive", (name, kind, v.key, v.status)
            assert "damaged store: " in v.detail and str(path) in v.detail, v.detail


def test_a_damaged_store_beside_an_intact_one(good, damaged):
    """norm_angle on a damaged and an intact store: the intact store's own verdicts stand, the
    damaged one gets its inconclusive row, and nothing pooled over both holds."""
    rows = analyze("norm_angle", {"good": good, "bad": damaged["zeroed"]}, figures=False).verdicts
    keys = {v.key: v for v in rows}
    assert keys["norm_angle_damaged_bad"].status == "inconclusive"
    alone = analyze("norm_angle", {"good": good}, figures=False).verdicts
    for v in alone:
        assert keys[v.key].status == v.status
    assert not any(k.endswith("_bad") and k != "norm_angle_damaged_bad" for k in keys)


@pytest.mark.parametrize("kind", ["zeroed", "deleted", "shortened", "truncated"])
def test_cli_analyze_names_the_damage_and_never_holds(damaged, tmp_path, kind):
    """`amdm-geom analyze norm_angle zero.zarr`: one error line naming store, variable and chunk,
    exit 1, no HOLDS in the table; `trace_checks` no longer says "All stores complete"."""
    path = damaged[kind]
    for analysis in ("norm_angle", "trace_checks"):
        out = clirun.run("analyze", analysis, path, "--out", tmp_path / analysis, cwd=tmp_path)
        assert out.returncode == 1, out.stderr
        errors = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and "damaged store" in errors[0] and str(path) in errors[0], out.stderr
        assert "HOLDS" not in out.stdout and "All stores complete" not in out.stdout
        assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------------------------
# result stores


@pytest.fixture
def result_folder(tmp_path) -> Path:
    import xarray as xr

    ds = xr.Dataset({"gap": (("step", "sample"), np.arange(24.0).reshape(6, 4)),
                     "ok": (("step",), np.array([True, False] * 3))}, coords={"step": np.arange(6)})
    row = Verdict(claim="c", where="w", status="holds", measured="m", bound="b", key="k")
    write_result(tmp_path / "res", ds, [row])
    return tmp_path / "res"


def test_result_stores_carry_checksums_and_are_checked(result_folder):
    store = result_folder / "results.zarr"
    ds = open_result(store)
    np.testing.assert_array_equal(ds.gap.values, np.arange(24.0).reshape(6, 4))
    meta = json.loads((store / "gap" / "zarr.json").read_text())
    assert meta["codecs"][-1]["name"] == "crc32c"
    arr = zarr.open_array(store / "gap", mode="r")
    assert arr.metadata.codecs[-1].to_dict()["name"] == "crc32c"


@pytest.mark.parametrize("kind", ["zeroed", "truncated", "deleted", "shortened", "added"])
def test_a_damaged_result_store_is_named(result_folder, kind):
    store = result_folder / "results.zarr"
    chunk = sorted(p for p in (store / "gap").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    if kind == "zeroed":
        chunk.write_bytes(b"\0" * chunk.stat().st_size)
    elif kind == "truncated":
        os.truncate(chunk, 3)
    elif kind == "deleted":
        chunk.unlink()
    elif kind == "shortened":
        meta = store / "gap" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["shape"][0] = 3
        meta.write_text(json.dumps(doc))
    else:
        (store / "gap" / "notes.txt").write_text("mine")
    with pytest.raises(DamagedStoreError) as info:
        open_result(store)
    text = str(info.value)
    assert "\n" not in text and str(store) in text and "gap" in text


def test_the_raw_chunk_writer_matches_zarrs_own_encoding(good):
    """Each chunk the recorder wrote itself (local, uncompressed) is byte for byte what zarr's own
    codec chain (bytes, then crc32c) makes of the same values."""
    from zarr.codecs import Crc32cCodec

    ds = open_run(good)
    for var in ("z_next", "eps", "agg_z"):
        meta = json.loads((good / var / "zarr.json").read_text())
        chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        ref = zarr.create_array(store=zarr.storage.MemoryStore(), shape=chunk_shape, chunks=chunk_shape,
                                dtype="float32", compressors=[Crc32cCodec()], fill_value=np.nan,
                                config={"write_empty_chunks": True})
        for chunk in sorted((good / var).glob("c.*"))[:3]:
            k, m = (int(i) for i in chunk.name.split(".")[1:3])
            sel = {"step": k, "model": m} if "model" in ds[var].dims else {"step": k}
            ref[...] = ds[var].isel(sel).values.reshape(chunk_shape)
            import asyncio

            want = asyncio.run(ref.store.get("c/" + "/".join("0" * len(chunk_shape)),
                                             zarr.core.buffer.default_buffer_prototype())).to_bytes()
            assert chunk.read_bytes() == want, (var, chunk.name)
