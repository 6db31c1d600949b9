"""The trace store is safe: --overwrite replaces only a trace store, and atomically (a failed,
interrupted or killed run leaves the old store byte for byte); one writer per store (an OS
lock); open_run refuses what is not a trace store in one line; the helpers analyses use to
say what a store lacks or how far its run got."""

import gc
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from amdm_geom.app import cli
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import (
    DamagedStoreError,
    StoreError,
    ZarrRecorder,
    check_output_path,
    completed_steps,
    incomplete_note,
    is_complete,
    is_trace_store,
    open_run,
    require,
    steps_completed,
)
from amdm_geom.store import paths as store_module

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (4, 8, 8)
STEPS = 10
# the child processes build exactly this sampler (kept in step with make_sampler below)
CHILD = r"""
import sys, time
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder
path, mode, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = fine_grained_family((4, 8, 8), separation=6.0, seed=4)
sampler = AMDMSampler([fam.model(name="a"), fam.model(name="b")],
                      [fam.condition(position=1), fam.condition(colour=2)],
                      SamplerConfig(num_inference_steps=steps, agg_steps=4))
rec = ZarrRecorder(path, overwrite=True)
print("locked", flush=True)
if mode == "hold":  # hold the lock until told to go on, then record seeds 7 and 8
    sys.stdin.readline()
    with sampler.recording(rec):
        sampler.sample([7, 8])
else:  # a slow run (the test kills it midway)
    with sampler.hooks(lambda name, step, value: time.sleep(0.05), names_filter="model0.z_next"):
        with sampler.recording(rec):
            sampler.sample([0])
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family(SHAPE, separation=6.0, seed=4)


def make_sampler(fam, steps=STEPS):
    models = [fam.model(name="a"), fam.model(name="b")]
    conds = [fam.condition(position=1), fam.condition(colour=2)]
    return AMDMSampler(models, conds, SamplerConfig(num_inference_steps=steps, agg_steps=4))


def record(sampler, path, seeds=(0,), **kw):
    with sampler.recording(ZarrRecorder(path, **kw)) as rec:
        sampler.sample(list(seeds))
    return rec


def tree_hashes(path: Path) -> dict[str, str]:
    """Every file under ``path`` (relative name -> sha256 of its bytes)."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list[str]:
    """Names beside ``path`` that belong to it (hidden partial copies, trash, lock files)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def assert_is_run(path: Path, fam, seeds, steps=STEPS):
    """Every variable of the store equals one in-memory run of the same sampler and seeds
    (so the store holds that run and nothing of another)."""
    _, cache = make_sampler(fam, steps).run_with_cache(list(seeds))
    ds = open_run(path).load()
    assert ds.attrs["complete"] is True and ds.attrs["seeds"] == list(seeds)
    assert set(ds.data_vars) == set(cache.data_vars)
    for v in ds.data_vars:
        np.testing.assert_array_equal(ds[v].values, cache[v].values)


@pytest.fixture
def old_store(fam, tmp_path):
    path = tmp_path / "runs" / "pair.zarr"
    record(make_sampler(fam), path, seeds=(0, 1))
    return path


# -- what --overwrite may replace ----------------------------------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path, capsys):
    p = tmp_path / "p"
    (p / "sub").mkdir(parents=True)
    (p / "thesis.tex").write_text("\\documentclass{book}\n")
    (p / "sub" / "data.csv").write_text("1,2\n")
    before = tree_hashes(p)
    with pytest.raises(StoreError) as info:
        ZarrRecorder(p, overwrite=True)
    msg = one_line(info)
    assert msg == f"refusing to overwrite {p}: not an amdm-geom trace store (no zarr.json)"
    assert isinstance(info.value, ValueError)
    # the user's reproduction, through the command line
    args = ["probe", "gmm_pair", "--steps", "4", "--agg-steps", "2", "--batch", "1", "--no-progress",
            "--latent-shape", "8", "--out", str(p), "--overwrite"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"refusing to overwrite {p}" in err
    assert tree_hashes(p) == before and sorted(os.listdir(p)) == ["sub", "thesis.tex"]
    assert sorted(os.listdir(tmp_path)) == ["p"]  # no lock or partial copy left behind
    # without --overwrite it is refused too, without suggesting --overwrite
    with pytest.raises(FileExistsError) as info:
        ZarrRecorder(p)
    assert "not an amdm-geom trace store" in one_line(info) and "overwrite=True" not in str(info.value)


def test_overwrite_refuses_a_plain_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"keep me")
    with pytest.raises(StoreError) as info:
        ZarrRecorder(f, overwrite=True)
    assert one_line(info) == f"refusing to overwrite {f}: not an amdm-geom trace store (a file, not a folder)"
    with pytest.raises(FileExistsError) as info:
        check_output_path(f, overwrite=False)
    assert str(f) in one_line(info)
    args = ["probe", "gmm_pair", "--steps", "4", "--agg-steps", "2", "--batch", "1", "--no-progress",
            "--latent-shape", "8", "--out", str(f), "--overwrite"]
    assert cli.main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert f.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def foreign_group(path: Path, attrs: dict) -> Path:
    g = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=attrs)
    g.create_array("x", shape=(3,), dtype="f8", fill_value=0.0)[...] = np.arange(3.0)
    return path


def identifying_attrs(library="amdm-geom 0.1.0") -> dict:
    return {"spec": "{}", "dtype": "float32", "hook_names": [], "complete": True, "steps_completed": 1,
            "creation_library": library}


@pytest.mark.parametrize("attrs,why", [
    ({}, "attribute 'spec' missing"),
    ({"title": "someone else's data"}, "attribute 'spec' missing"),
    ({k: v for k, v in identifying_attrs().items() if k != "complete"}, "attribute 'complete' missing"),
    (identifying_attrs("xarray"), "written by 'xarray', not amdm-geom"),
])
def test_foreign_zarr_groups_are_neither_replaced_nor_opened(tmp_path, attrs, why):
    path = foreign_group(tmp_path / "other.zarr", attrs)
    before = tree_hashes(path)
    assert not is_trace_store(path)
    with pytest.raises(StoreError) as info:
        ZarrRecorder(path, overwrite=True)
    assert one_line(info) == f"refusing to overwrite {path}: not an amdm-geom trace store ({why})"
    with pytest.raises(StoreError) as info:
        open_run(path)
    assert one_line(info) == f"{path} is not an amdm-geom trace store: {why}"
    assert tree_hashes(path) == before


def test_is_trace_store(old_store, tmp_path):
    assert is_trace_store(old_store)
    assert not is_trace_store(tmp_path / "nothing.zarr")
    (tmp_path / "empty").mkdir()
    assert not is_trace_store(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zarr.json").write_text("{not json")
    assert not is_trace_store(tmp_path / "bad")
    arr = zarr.create_array(str(tmp_path / "array.zarr"), shape=(2,), dtype="f4", zarr_format=3)
    arr.attrs.update(identifying_attrs())
    assert not is_trace_store(tmp_path / "array.zarr")  # an array, not a group


def test_a_just_started_store_is_already_recognisable(fam, tmp_path):
    """The identifying attributes are written with the group, before the first step."""
    path = tmp_path / "fresh.zarr"
    seen = []

    def look(name, step, value):
        if step == 0:
            seen.append((is_trace_store(path), json.loads((path / "zarr.json").read_text())["attributes"]))

    sampler = make_sampler(fam)
    with sampler.hooks(look, names_filter="model0.z"):
        record(sampler, path)
    ok, attrs = seen[0]
    assert ok and attrs["complete"] is False and attrs["steps_completed"] == 0
    assert attrs["creation_library"].startswith("amdm-geom")


def test_check_output_path(old_store, tmp_path):
    check_output_path(tmp_path / "a" / "b" / "new.zarr", overwrite=False)  # parents can be made
    assert not (tmp_path / "a").exists()  # and nothing was touched
    check_output_path(old_store, overwrite=True)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        check_output_path(old_store, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        check_output_path(tmp_path / "file" / "run.zarr", overwrite=False)
    bad = tmp_path / "file" / "run.zarr"
    assert one_line(info) == f"cannot write trace store {bad}: {tmp_path / 'file'} is not a folder"
    link = tmp_path / "link.zarr"
    link.symlink_to(old_store)
    with pytest.raises(StoreError, match="symbolic link"):
        check_output_path(link, overwrite=True)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "readonly"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(StoreError, match="is not writable"):
                check_output_path(locked / "run.zarr", overwrite=False)
        finally:
            locked.chmod(0o700)


# -- replacing atomically ------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_failed_replacement_leaves_the_old_store(fam, old_store, error):
    before = tree_hashes(old_store)
    sampler = make_sampler(fam)
    partials = []

    def fail(name, step, value):
        if step == 5:
            partials.extend(siblings(old_store))
            raise error("injected")

    with sampler.hooks(fail, names_filter="model0.z"):
        with pytest.raises(error):
            record(sampler, old_store, seeds=(3,), overwrite=True)
    # the run was writing into a hidden sibling, which is gone; the old store is as it was
    assert any(re.fullmatch(r"\.pair\.zarr\.[0-9a-f]{32}\.partial", n) for n in partials)
    assert tree_hashes(old_store) == before and siblings(old_store) == []
    assert open_run(old_store).attrs["seeds"] == [0, 1]
    record(make_sampler(fam), old_store, seeds=(3,), overwrite=True)  # the lock was released
    assert_is_run(old_store, fam, [3])


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replacement_swaps_in_the_complete_run(fam, old_store, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(store_module, "_exchange", lambda a, b: False)
    elif store_module._renameat2() is None:
        pytest.skip("no renameat2 here")
    record(make_sampler(fam), old_store, seeds=(4, 5, 6), overwrite=True)
    assert_is_run(old_store, fam, [4, 5, 6])
    assert siblings(old_store) == []


def test_a_swap_killed_between_its_renames_is_repaired(fam, old_store):
    """Where the swap takes two renames, a kill between them leaves the old store as trash and
    none at the path: the next writer puts the old store back before anything else."""
    before = tree_hashes(old_store)
    trash = old_store.with_name(f".pair.zarr.{'a' * 32}.trash")
    partial = old_store.with_name(f".pair.zarr.{'b' * 32}.partial")
    os.rename(old_store, trash)
    (partial / "z").mkdir(parents=True)
    other = old_store.with_name(f".pair.zarr.old.{'c' * 32}.partial")  # another store's ("pair.zarr.old")
    other.mkdir()
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        ZarrRecorder(old_store)
    assert tree_hashes(old_store) == before
    assert not trash.exists() and not partial.exists() and other.exists()


def child(path: Path, mode: str, steps: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode, str(steps)], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)


def wait_line(proc: subprocess.Popen, expected: str, log: Path, timeout: float = 60.0) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    assert line.strip() == expected, f"child said {line!r}; stderr: {log.read_text()[-2000:]}"


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        assert proc.poll() is None, f"child exited early; stderr: {log.read_text()[-2000:]}"
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_a_killed_replacement_leaves_the_old_store_byte_for_byte(fam, old_store, tmp_path):
    before = tree_hashes(old_store)
    log = tmp_path / "child.log"
    proc = child(old_store, "slow", 200, log)
    try:
        wait_line(proc, "locked", log)

        def partial_with_chunks():
            for p in old_store.parent.glob(".pair.zarr.*.partial"):
                if len([c for c in (p / "z").glob("c*")]) >= 4:  # some steps are on disk
                    return p
            return None

        partial = wait_for(partial_with_chunks, proc, log)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    assert tree_hashes(old_store) == before
    lock = old_store.with_name(".pair.zarr.lock")
    assert partial.exists() and lock.read_text().split() == [str(proc.pid)]  # what the kill left
    with ZarrRecorder(old_store, overwrite=True) as rec:  # the lock of a dead process is free
        assert not partial.exists() and siblings(old_store) == [".pair.zarr.lock"]
        assert lock.read_text().split() == [str(os.getpid())]
        sampler = make_sampler(fam)
        with sampler.recording(rec):
            sampler.sample([9])
    assert siblings(old_store) == []
    assert_is_run(old_store, fam, [9])


def test_one_writer_per_store(fam, old_store, tmp_path):
    log = tmp_path / "child.log"
    proc = child(old_store, "hold", STEPS, log)
    try:
        wait_line(proc, "locked", log)
        for overwrite in (True, False):
            with pytest.raises((StoreError, FileExistsError)) as info:
                ZarrRecorder(old_store, overwrite=overwrite)
            if overwrite:
                assert one_line(info) == (f"trace store {old_store} is being written by process {proc.pid}; "
                                          f"wait for it or choose another --out")
        assert open_run(old_store).attrs["seeds"] == [0, 1]  # readers are never blocked
        proc.stdin.write("go\n")
        proc.stdin.flush()
        wait_line(proc, "done", log)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    assert_is_run(old_store, fam, [7, 8])  # the child's run, whole
    assert siblings(old_store) == []
    record(make_sampler(fam), old_store, seeds=(2,), overwrite=True)
    assert_is_run(old_store, fam, [2])


def test_two_recorders_in_one_process(fam, tmp_path):
    path = tmp_path / "one.zarr"
    first = ZarrRecorder(path)
    with pytest.raises(StoreError) as info:
        ZarrRecorder(path)
    assert f"being written by process {os.getpid()} (this process" in one_line(info)
    sampler = make_sampler(fam)
    with sampler.recording(first):
        sampler.sample([1])
    assert siblings(path) == []  # end() released the lock and removed its file
    with ZarrRecorder(path, overwrite=True) as rec:
        assert siblings(path) == [".one.zarr.lock"]
    assert siblings(path) == []
    with pytest.raises(StoreError, match="was closed"):
        with sampler.recording(rec):
            sampler.sample([1])
    assert_is_run(path, fam, [1])


def test_close_ends_a_begun_run_and_a_dropped_recorder_unlocks(fam, old_store):
    before = tree_hashes(old_store)
    sampler = make_sampler(fam)
    rec = ZarrRecorder(old_store, overwrite=True)
    rec.begin(sampler.plan([5]))  # laid out (in a hidden sibling), never run
    assert len(siblings(old_store)) == 2  # the lock file and the partial copy
    rec.close()
    assert siblings(old_store) == [] and tree_hashes(old_store) == before
    rec = ZarrRecorder(old_store, overwrite=True)
    del rec
    gc.collect()
    assert siblings(old_store) == []
    with ZarrRecorder(old_store, overwrite=True):
        pass
    assert tree_hashes(old_store) == before  # a recorder that never ran changes nothing


# -- reading -------------------------------------------------------------------------------------


def test_open_run_refusals(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        open_run(tmp_path / "nope.zarr")
    assert one_line(info) == f"no trace store at {tmp_path / 'nope.zarr'}"
    bare = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w-", zarr_format=3)  # a failed start's leftover
    assert dict(bare.attrs) == {}
    with pytest.raises(StoreError) as info:
        open_run(tmp_path / "bare.zarr")
    assert one_line(info) == f"{tmp_path / 'bare.zarr'} is not an amdm-geom trace store: attribute 'spec' missing"


@pytest.fixture(scope="module")
def interrupted(fam, tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "broken.zarr"
    sampler = make_sampler(fam)

    def fail(name, step, value):
        if step == 6:
            raise Boom("injected")

    with sampler.hooks(fail, names_filter="model0.eps"):
        with pytest.raises(Boom):
            record(sampler, path, seeds=(0, 1))
    return path


def test_completed_steps_and_notes(interrupted, old_store):
    ds = open_run(interrupted)
    assert steps_completed(ds) == 6 and not is_complete(ds)
    assert incomplete_note(ds) == f"incomplete store: 6 of {STEPS} steps"
    done = completed_steps(ds)
    assert done.sizes["step"] == 6 and list(done.step.values) == list(range(6))
    assert not np.isnan(done.z.isel(model=0).values).any()  # every kept step is finished
    assert np.isnan(ds.z.isel(model=0, step=slice(7, None)).values).all()
    assert done.attrs == ds.attrs and done.encoding["source"] == str(interrupted)
    full = open_run(old_store)
    assert is_complete(full) and incomplete_note(full) == "" and steps_completed(full) == STEPS
    assert completed_steps(full).sizes["step"] == STEPS
    clipped = full.copy()
    clipped.attrs = {**full.attrs, "steps_completed": 99}
    with pytest.raises(DamagedStoreError, match="99 steps recorded as completed but its arrays hold"):
        steps_completed(clipped)  # (never clipped to what is there: issue 22)
    clipped.attrs["steps_completed"] = -3
    assert steps_completed(clipped) == 0 and not is_complete(clipped)


def test_require(old_store):
    ds = open_run(old_store)
    require(ds, variables=("z", "model_sigma"), attrs=("spec", "seeds"))
    with pytest.raises(StoreError) as info:
        require(ds, variables=("z", "eps_cross"), hints={"eps_cross": "record with --cross-eps"})
    assert one_line(info) == f"store {old_store} lacks variable 'eps_cross' (record with --cross-eps)"
    with pytest.raises(StoreError) as info:
        require(ds, attrs="ablation")
    assert one_line(info) == f"store {old_store} lacks attribute 'ablation'"
    with pytest.raises(StoreError, match=r"store \(in memory\) lacks attribute 'complete'"):
        is_complete(_no_attrs(ds))


def _no_attrs(ds):
    ds = ds.copy()
    ds.attrs = {}
    ds.encoding = {}
    return ds
