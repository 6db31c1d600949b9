"""``amdm-geom sweep`` on a real dask cluster started as a user would, a sweep killed midway and
started again, bad sweep files and addresses, and ``amdm-geom clean``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from amdm_geom.app.cli import main
from amdm_geom.app.sweep import _complete
from amdm_geom.app.sweep_spec import load_sweep, point_name

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "sweep.toml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _wait(predicate, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A dask scheduler and one ``dask worker`` with two one-thread worker processes."""
    folder = tmp_path_factory.mktemp("cluster")
    file = folder / "scheduler.json"
    common = dict(cwd=folder, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(file)], **common)]
    try:
        address = _wait(lambda: file.exists() and json.loads(file.read_text() or "{}").get("address"), 60,
                        "the scheduler")
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard"], **common))
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The example's points run serially in this process: ``{name: store}``."""
    from amdm_geom.app.runner.registry import load_probe

    out = tmp_path_factory.mktemp("serial")
    probe, points = load_sweep(EXAMPLE, out)
    module = load_probe(probe)
    for p in points:
        module.run(p.spec, quiet=True)
    return {p.name: p.store for p in points}


def _arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def _assert_equal_stores(a: Path, b: Path) -> None:
    got, want = _arrays(a), _arrays(b)
    assert sorted(got) == sorted(want) and len(want) > 5
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert np.array_equal(got[name], want[name], equal_nan=True), f"{a.name}: {name} differs"


def _snapshot(store: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(store)): (p.read_bytes(), p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file()}


def test_point_names_are_stable_and_distinct():
    assert point_name({"sampler.eta": 0.3, "sampler.agg_steps": 8}) == "eta=0.3_agg_steps=8"
    assert point_name({"run.seed": 1, "family.seed": 2}) == "run.seed=1_family.seed=2"
    assert point_name({"family.latent_shape": [4, 8, 8]}) == "latent_shape=4x8x8"
    _, points = load_sweep(EXAMPLE, "/x")
    assert len({p.name for p in points}) == len(points) == 4
    assert {(p.spec.sampler.eta, p.spec.sampler.agg_steps) for p in points} == {(0.0, 2), (0.0, 4), (0.3, 2), (0.3, 4)}
    assert all(p.spec.run.out == Path("/x") / f"{p.name}.zarr" and p.spec.run.batch == 4 for p in points)


def test_sweep_on_a_dask_cluster_equals_serial_runs(scheduler, reference, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(EXAMPLE), "--out", str(out), "--scheduler", scheduler, "--no-progress"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in record["points"]] == ["done"] * 4
    assert record["scheduler"] == scheduler
    for name, want in reference.items():
        _assert_equal_stores(out / f"{name}.zarr", want)
    assert "dashboard" in capsys.readouterr().err


@pytest.mark.slow  # (an extra: 16 s; the restart logic is also covered by the serial sweep's tests)
def test_killed_sweep_restarts_and_keeps_complete_stores(scheduler, reference, tmp_path):
    out = tmp_path / "sweep"
    stores = [out / f"{name}.zarr" for name in reference]
    proc = subprocess.Popen([str(BIN / "amdm-geom"), "sweep", str(EXAMPLE), "--out", str(out), "--workers", "1",
                             "--no-progress"], cwd=tmp_path, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: any(_complete(s) for s in stores) or proc.poll() is not None, 120, "a first complete store")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        _stop(proc)
        proc.stderr.close()
    complete = [s for s in stores if _complete(s)]
    assert 1 <= len(complete) < len(stores)  # (killed midway)
    before = {s: _snapshot(s) for s in complete}
    assert main(["sweep", str(EXAMPLE), "--out", str(out), "--scheduler", scheduler, "--no-progress"]) == 0
    for s in complete:
        assert _snapshot(s) == before[s], f"{s.name} was rewritten"
    statuses = {r["name"]: r["status"] for r in json.loads((out / "sweep.json").read_text())["points"]}
    assert statuses == {s.name.removesuffix(".zarr"): "skipped" if s in complete else "done" for s in stores}
    for name, want in reference.items():
        _assert_equal_stores(out / f"{name}.zarr", want)


@pytest.mark.parametrize("grid, said", [
    ('"sampler.eta" = [0.0, 0.3]\n"sampler.etaa" = [1]', "grid point eta=0.0_etaa=1 (sampler.eta=0.0, "
                                                        "sampler.etaa=1): sampler.etaa is not a setting"),
    ('"sampler.steps" = [5, 0]', "grid point steps=0 (sampler.steps=0): sampler.num_inference_steps must be an "
                                 "int >= 1; got 0"),
    ('"run.out" = ["a.zarr"]', "run.out is set by the sweep"),
])
def test_bad_sweep_files_are_refused_before_any_task(tmp_path, capsys, grid, said):
    spec = tmp_path / "bad.toml"
    spec.write_text(f'probe = "gmm_pair"\n[base]\nfamily = {{ latent_shape = [4, 8, 8] }}\n[grid]\n{grid}\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("amdm-geom sweep: error: ") and said in err, err
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_is_one_line(tmp_path, capsys):
    with socket.socket() as s:  # (a port nobody listens on)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert main(["sweep", str(EXAMPLE), "--out", str(tmp_path), "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the dask scheduler at tcp://127.0.0.1:{port}" in err, err
    assert not list(tmp_path.glob("*.zarr"))


def test_clean_removes_what_it_wrote_and_keeps_the_rest(reference, tmp_path, capsys):
    import xarray as xr

    from amdm_geom.app.runner.output import REPORT_MARKER, write_owned, write_result

    runs, report = tmp_path / "runs", tmp_path / "report"
    store = next(iter(reference.values()))
    shutil.copytree(store, runs / "a.zarr")
    shutil.copytree(store, runs / "ablations" / "b.zarr")  # (a plain folder holding only stores)
    (runs / "mine").mkdir()
    (runs / "mine" / "notes.txt").write_text("keep me")
    (runs / "mine" / "c.zarr").mkdir()  # (a folder named like a store, not one)
    (runs / "mine" / "c.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    write_result(report / "norm_angle", xr.Dataset({"x": ("i", [1.0, 2.0])}), [])
    write_owned(report, "index.html", "<html></html>")
    (report / "thesis.tex").write_text("keep me")

    def size(path):
        return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    sizes = {p: size(p) for p in (runs / "a.zarr", report / "norm_angle", report / "index.html",
                                  report / REPORT_MARKER)}
    assert main(["clean", str(runs), str(report)]) == 0
    out = capsys.readouterr().out
    assert not (runs / "a.zarr").exists() and not (runs / "ablations").exists()
    assert not (report / "norm_angle").exists() and not (report / "index.html").exists()
    assert not (report / REPORT_MARKER).exists()
    assert (runs / "mine" / "notes.txt").read_text() == "keep me" and (runs / "mine" / "c.zarr" / "zarr.json").exists()
    assert (report / "thesis.tex").read_text() == "keep me"
    assert f"removed {runs / 'a.zarr'} ({sizes[runs / 'a.zarr']:,} bytes)" in out
    assert f"kept {runs / 'mine'} (not made by amdm-geom)" in out and f"kept {report / 'thesis.tex'}" in out
    assert f"freed {sum(sizes.values()) + sizes[runs / 'a.zarr']:,} bytes in 5 item(s)" in out


def test_an_empty_store_folder_left_by_a_kill_is_redone(tmp_path):
    # a point killed after its store's folder was made and before its zarr.json leaves an empty folder:
    # the next sweep removes it and redoes the point; a folder with anything else in it stays refused
    from amdm_geom.app.sweep import plan
    from amdm_geom.app.sweep_spec import load_sweep

    out = tmp_path / "sweep"
    _, points = load_sweep(EXAMPLE, out)
    points[0].store.mkdir(parents=True)
    assert plan(points) == {p.name: False for p in points} and not points[0].store.exists()
    points[0].store.mkdir()
    (points[0].store / "thesis.tex").write_text("mine")
    with pytest.raises(ValueError, match="not an amdm-geom trace store"):
        plan(points)
    assert (points[0].store / "thesis.tex").read_text() == "mine"


def test_a_yaml_sweep_reports_a_point_that_fails_at_run_time_and_runs_the_rest(scheduler, tmp_path, capsys):
    # shift_mean="velocity" is a valid setting that only a flow model can take: the point passes the
    # file's checks and fails when its sampler is built, on a worker
    spec = tmp_path / "sweep.yaml"
    spec.write_text("probe: gmm_pair\nbase:\n  family: {latent_shape: [4, 8, 8]}\n  sampler: {steps: 4}\n"
                    "  run: {batch: 2}\ngrid:\n  sampler.shift_mean: [step, velocity]\n")
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--scheduler", scheduler, "--no-progress"]) == 1
    said = capsys.readouterr()
    rows = {r["name"]: r for r in json.loads((out / "sweep.json").read_text())["points"]}
    assert rows["shift_mean=step"]["status"] == "done" and _complete(out / "shift_mean=step.zarr")
    failed = rows["shift_mean=velocity"]
    assert failed["status"] == "failed" and failed["values"] == {"sampler.shift_mean": "velocity"}
    assert failed["error"].startswith("ValueError: ") and "velocity" in failed["error"] and "\n" not in failed["error"]
    assert not _complete(out / "shift_mean=velocity.zarr")
    assert "sweep: 1 done, 0 skipped (complete), 1 failed" in said.out
    assert f"failed shift_mean=velocity {{'sampler.shift_mean': 'velocity'}}: {failed['error']}" in said.out
    assert f"failed shift_mean=velocity ({out / 'shift_mean=velocity.zarr'}): {failed['error']}" in said.err

