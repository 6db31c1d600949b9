"""Runaway sizes and hangs (issue 22, section 3), tried as a user would: each case runs the
``amdm-geom`` command line in a process of its own (``tests.clirun``) and expects one line on stderr
(``amdm-geom COMMAND: error: ...``), exit code 2, within seconds, and nothing created.

Every subprocess runs under an address-space limit (``LIMIT_BYTES``) and a wall-clock timeout, so
a case that is not refused fails fast (a ``MemoryError`` traceback, or the timeout) instead of
taking the machine's memory: no case here allocates much, refused or not.

The caps (``amdm_geom.core.budget``) are made small through their environment variables where a case
needs a run over a cap; ``--force-size`` lets such a run through.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import clirun

#: The address space each command may take (torch and dask fit in it; a runaway run does not).
LIMIT_BYTES = 3 << 30
#: Seconds a command may take before the case counts as a hang.
TIMEOUT = 90
SMALL = ["--steps", "3", "--batch", "1", "--latent-shape", "4", "8", "8", "--no-progress"]


def amdm(*args, cwd: Path, env: dict | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``amdm-geom ARGS`` in ``cwd``, in a process of its own under ``LIMIT_BYTES`` (its process
    group is killed if it outlives ``timeout``; ``tests.clirun``: the imports are paid once)."""
    return clirun.run(*args, cwd=cwd, env={"OMP_NUM_THREADS": "1", **(env or {})}, timeout=timeout,
                      limit=LIMIT_BYTES)


def refused(done: subprocess.CompletedProcess, command: str, *expected: str) -> str:
    """The one error line of a refused command; it contains each of ``expected``."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = lines[0]
    assert line.startswith(f"amdm-geom {command}: error: "), line
    for text in expected:
        assert text in line or text in line.replace(",", ""), (text, line)
    return line


def _available_memory() -> int:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(meminfo["MemAvailable"].split()[0]) * 1024


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------
# probes: the store's and the sampler's sizes, from the spec, before anything is built or created


PROBE_CASES = {
    # the two: a billion samples, and a latent of 4 x 100000 x 100000 values
    "gmm-batch": ("gmm_pair", ["--steps", "3", "--batch", "1000000000", "--latent-shape", "4", "8", "8"],
                  "1000000000"),
    "gmm-latent": ("gmm_pair", ["--steps", "3", "--batch", "1", "--latent-shape", "4", "100000", "100000"],
                   "4x100000x100000"),
    # the same kinds in the other probes
    "cross-latent": ("gmm_cross_ecosystem", ["--steps", "2", "--batch", "2", "--latent-shape", "1000000000"],
                     "1000000000"),
    "flow-batch": ("flow_pair", ["--steps", "2", "--agg-steps", "1", "--batch", "500000000", "--latent-shape", "4", "8",
                                 "8"],
                   "500000000"),
    "unet-size": ("unet_pair", ["--steps", "2", "--batch", "1", "--sample-size", "300000", "--channels", "8", "16"],
                  "300000x300000"),
    "transformer-size": ("flow_transformer_pair", ["--steps", "2", "--agg-steps", "1", "--batch", "1", "--sample-size",
                                                   "200000"],
                         "200000x200000"),
    "digits-batch": ("digits_pair", ["--steps", "2", "--batch", "200000000"], "200000000"),
}


#: The issue's two cases run by default; the same kinds in the other probes with -m slow.
_DEFAULT_CASES = ("gmm-batch", "gmm-latent")


@pytest.mark.parametrize("case", [c if c in _DEFAULT_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in sorted(PROBE_CASES)])
def test_a_runaway_probe_is_refused_in_one_line_before_anything_is_made(tmp_path, case):
    probe, options, value = PROBE_CASES[case]
    done = amdm("probe", probe, *options, "--no-progress", "--out", tmp_path / "run.zarr", cwd=tmp_path)
    line = refused(done, "probe", "--force-size")
    assert value in line.replace(",", ""), line
    assert "B" in line and "above" in line, line  # (the estimate in bytes, and the limit it is above)
    assert listing(tmp_path) == []  # no store, no lock file, no images folder


def test_a_run_whose_sampler_does_not_fit_in_memory_is_refused(tmp_path):
    """One recorded step of one variable, so that the store is small beside the sampler's tensors:
    samples whose one latent block is the machine's available memory."""
    size = 1000  # values per sample (float32)
    batch = _available_memory() // (4 * size) + 1
    done = amdm("probe", "gmm_pair", "--steps", "1", "--agg-steps", "0", "--batch", batch, "--latent-shape", size,
                "--names", "model0.z_next", "--out", tmp_path / "run.zarr", "--no-progress", cwd=tmp_path)
    line = refused(done, "probe", "--force-size", str(batch))
    assert listing(tmp_path) == [], line


@pytest.mark.slow
def test_a_run_whose_random_generators_do_not_fit_in_memory_is_refused(tmp_path):
    """One value per sample, one recorded variable: latents and store are small, but every sample
    has a random generator per model (2.65 kB each): enough samples that those alone do not fit."""
    batch = _available_memory() // (2 * 2600) + 1
    done = amdm("probe", "gmm_pair", "--steps", "1", "--agg-steps", "0", "--batch", batch, "--latent-shape", 1,
                "--names", "model0.z_next", "--out", tmp_path / "run.zarr", "--no-progress", cwd=tmp_path)
    line = refused(done, "probe", "--force-size", "random generators", "memory")
    assert listing(tmp_path) == [], line


def test_a_rerun_of_an_edited_spec_is_refused(tmp_path):
    """``rerun`` of a store whose kept spec was edited to a latent of 4 x 100000 x 100000."""
    from amdm_geom.models.specs import GMMFamilySpec
    from amdm_geom.probes import RunSettings, gmm_pair
    from amdm_geom.sampling.config import SamplerConfig

    store = tmp_path / "small.zarr"
    gmm_pair.run(gmm_pair.Spec(family=GMMFamilySpec(latent_shape=(4, 8, 8)), sampler=SamplerConfig(steps=2),
                               run=RunSettings(batch=1, out=store, progress=False)), quiet=True)
    meta = json.loads((store / "zarr.json").read_text())
    spec = json.loads(meta["attributes"]["spec"])
    spec["family"]["latent_shape"] = [4, 100000, 100000]
    meta["attributes"]["spec"] = json.dumps(spec)
    (store / "zarr.json").write_text(json.dumps(meta))
    before = listing(tmp_path)
    done = amdm("rerun", store, "--out", tmp_path / "again.zarr", "--no-progress", cwd=tmp_path)
    line = refused(done, "rerun", "--force-size", "4x100000x100000")
    assert listing(tmp_path) == before, line


def _variable_chunks(store: Path) -> list[int]:
    """The sizes of the recorded variables' chunk files in ``store`` (coordinates and metadata left out)."""
    from amdm_geom.sampling.hooks import parse_hook_name

    names = json.loads((store / "zarr.json").read_text())["attributes"]["hook_names"]
    return [f.stat().st_size for var in {parse_hook_name(n)[0] for n in names}
            for f in (store / var).iterdir() if f.name != "zarr.json"]


#: Bytes a chunk file may hold beyond its values (a checksum, a codec's header).
CHUNK_OVERHEAD = 64


@pytest.mark.parametrize("agg_steps, exact", [(4, True), (2, False)])
def test_the_store_estimate_is_what_the_store_holds(tmp_path, agg_steps, exact):
    """Every step aggregated, every model running to the end: the estimate is the chunk files'
    values exactly (3 samples in chunks of 2: the last chunk is stored whole). A shorter window
    leaves chunks unwritten: the estimate is then an upper bound."""
    from amdm_geom.models.specs import GMMFamilySpec
    from amdm_geom.probes import RunSettings, gmm_pair
    from amdm_geom.probes.specs import latent_shape, size_of
    from amdm_geom.sampling.config import SamplerConfig

    spec = gmm_pair.Spec(family=GMMFamilySpec(latent_shape=(2, 4, 4)),
                         sampler=SamplerConfig(steps=4, agg_steps=agg_steps, continue_after_window=True),
                         run=RunSettings(batch=3, chunk=2, out=tmp_path / "run.zarr", progress=False))
    estimate = size_of(spec, latent_shape(spec)).store_bytes
    assert estimate == 4 * (8 * 2 + 1) * 4 * 32 * 4  # steps x slots x stored samples x values x bytes
    gmm_pair.run(spec, quiet=True)
    chunks = _variable_chunks(tmp_path / "run.zarr")
    chunk_bytes = 2 * 32 * 4
    assert all(chunk_bytes <= size <= chunk_bytes + CHUNK_OVERHEAD for size in chunks)
    held = len(chunks) * chunk_bytes
    assert held == estimate if exact else 0 < held < estimate


def test_a_normal_small_run_is_not_refused(tmp_path):
    done = amdm("probe", "gmm_pair", *SMALL, "--out", tmp_path / "run.zarr", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run.zarr" / "zarr.json").is_file()


def test_a_store_over_the_cap_is_refused_and_force_size_lets_it_through(tmp_path):
    """A cap made small through its environment variable: the run is refused naming the cap and
    the variable; ``--force-size`` runs it anyway."""
    env = {"AMDM_GEOM_MAX_STORE_BYTES": "10000"}
    done = amdm("probe", "gmm_pair", *SMALL, "--out", tmp_path / "run.zarr", cwd=tmp_path, env=env)
    refused(done, "probe", "--force-size", "AMDM_GEOM_MAX_STORE_BYTES", "10.0 kB")
    assert listing(tmp_path) == []
    done = amdm("probe", "gmm_pair", *SMALL, "--force-size", "--out", tmp_path / "run.zarr", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run.zarr" / "zarr.json").is_file()


@pytest.mark.slow
def test_force_size_is_documented_in_every_probe_help(tmp_path):
    for probe in ("gmm_pair", "digits_pair"):
        done = amdm("probe", probe, "--help", cwd=tmp_path)
        assert done.returncode == 0 and "--force-size" in done.stdout, done.stdout[-2000:]


# --------------------------------------------------------------------------------------------
# sweeps: the grid's size from its axes, before expanding it or starting a cluster


def sweep_file(folder: Path, grid: dict, base: str = 'family = { latent_shape = [4, 8, 8] }\nrun = { batch = 1 }',
               name: str = "sweep.toml") -> Path:
    lines = ['probe = "gmm_pair"', "[base]", base, "[grid]"]
    lines += [f'"{key}" = {json.dumps(values)}' for key, values in grid.items()]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_grid_of_a_million_points_is_refused_at_once(tmp_path):
    grid = {"sampler.eta": [i / 100 for i in range(100)], "perturb": [i / 100 for i in range(100)],
            "guidance": [1 + i / 100 for i in range(100)]}
    path = sweep_file(tmp_path, grid)
    start = time.monotonic()
    done = amdm("sweep", path, "--out", tmp_path / "out", "--no-progress", cwd=tmp_path, timeout=60)
    line = refused(done, "sweep", "1000000", "10000", "--force-size")
    assert time.monotonic() - start < 45, line
    assert listing(tmp_path) == ["sweep.toml"]


@pytest.mark.slow
def test_a_grid_over_the_points_cap_set_small(tmp_path):
    path = sweep_file(tmp_path, {"sampler.eta": [0.0, 0.1, 0.2]})
    done = amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path, env={"AMDM_GEOM_MAX_SWEEP_POINTS": "2"})
    refused(done, "sweep", "3 points", "AMDM_GEOM_MAX_SWEEP_POINTS", "--force-size")
    assert listing(tmp_path) == ["sweep.toml"]


def test_a_sweep_point_too_large_is_refused_before_a_cluster_starts(tmp_path):
    path = sweep_file(tmp_path, {"sampler.eta": [0.0, 0.3]},
                      base="family = { latent_shape = [4, 8, 8] }\nrun = { batch = 1000000000 }")
    done = amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    line = refused(done, "sweep", "--force-size", "grid point eta=0.0", str(path))
    assert "1000000000" in line.replace(",", ""), line
    assert listing(tmp_path) == ["sweep.toml"]


@pytest.mark.slow
def test_a_sweep_whose_stores_together_do_not_fit_on_the_disk_is_refused(tmp_path):
    """Two points, each store 0.6 of the free disk (the cap on one store lifted): each fits, the
    two do not."""
    import shutil

    free = shutil.disk_usage(tmp_path).free
    values = int(0.6 * free / (1000 * 17 * 4))  # 1000 steps x 17 variable slots x 4 bytes per value
    base = f"family = {{ latent_shape = [{values}] }}\nsampler = {{ steps = 1000 }}\nrun = {{ batch = 1 }}"
    path = sweep_file(tmp_path, {"sampler.eta": [0.0, 0.3]}, base=base)
    done = amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path,
                env={"AMDM_GEOM_MAX_STORE_BYTES": str(10**18)})
    refused(done, "sweep", "--force-size", "2 points would store", "free on the disk", str(path))
    assert listing(tmp_path) == ["sweep.toml"]


def test_load_sweep_with_force_size_lifts_the_caps_and_forces_each_point(tmp_path, monkeypatch):
    """What ``amdm-geom sweep --force-size`` passes on (``load_sweep(..., force_size=True)``): the
    points cap and the sizes are not checked, and every point's run is forced."""
    from amdm_geom.app.sweep_spec import SweepError, load_sweep

    monkeypatch.setenv("AMDM_GEOM_MAX_SWEEP_POINTS", "1")
    monkeypatch.setenv("AMDM_GEOM_MAX_STORE_BYTES", "10000")
    path = sweep_file(tmp_path, {"sampler.eta": [0.0, 0.3]})
    with pytest.raises(SweepError, match="2 points"):
        load_sweep(path, tmp_path / "out")
    monkeypatch.setenv("AMDM_GEOM_MAX_SWEEP_POINTS", "2")
    with pytest.raises(SweepError, match="grid point eta=0.0: the run is too large"):
        load_sweep(path, tmp_path / "out")
    probe, points = load_sweep(path, tmp_path / "out", force_size=True)
    assert probe == "gmm_pair" and [p.spec.run.force_size for p in points] == [True, True]
    assert listing(tmp_path) == ["sweep.toml"]


@pytest.mark.slow
def test_sweep_force_size_lets_a_grid_over_the_cap_through(tmp_path):
    path = sweep_file(tmp_path, {"sampler.eta": [0.0, 0.3]})
    env = {"AMDM_GEOM_MAX_SWEEP_POINTS": "1", "AMDM_GEOM_MAX_STORE_BYTES": "10000"}
    refused(amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path, env=env), "sweep", "--force-size")
    done = amdm("sweep", path, "--out", tmp_path / "out", "--workers", "1", "--no-progress", "--force-size",
                cwd=tmp_path, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "eta=0.3.zarr" / "zarr.json").is_file()


# --------------------------------------------------------------------------------------------
# the sweep file itself: aliases and size bounded


def laughs(path: Path, first: list, per_level: int, levels: int) -> Path:
    """A sweep file whose one grid value is ``first`` repeated ``per_level`` times per level of
    nested aliases (``&a0 .. &a{levels}``), anchored in a setting of ``base``."""
    anchors = [f"&a0 [{', '.join(map(str, first))}]"]
    anchors += [f"&a{i} [{', '.join([f'*a{i - 1}'] * per_level)}]" for i in range(1, levels + 1)]
    path.write_text("probe: gmm_pair\nbase:\n  laughs: [" + ", ".join(anchors) + "]\n"
                    f"grid:\n  sampler.eta: [*a{levels}]\n")
    return path


def test_a_yaml_billion_laughs_is_refused_naming_the_file(tmp_path):
    """Nine levels of nine aliases (``&a0 .. &a8``): 9**9 values once read."""
    path = laughs(tmp_path / "laughs.yaml", ["lol"] * 9, 9, 8)
    line = refused(amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path, timeout=60), "sweep", str(path),
                   "alias")
    assert listing(tmp_path) == ["laughs.yaml"], line


@pytest.mark.slow
def test_a_yaml_list_repeated_through_few_aliases_is_refused(tmp_path):
    """Few aliases (29), each level repeating a long list four times: the document as read is
    bounded too, not only the aliases."""
    path = laughs(tmp_path / "few.yaml", [0.1] * 20000, 4, 7)
    refused(amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path, timeout=60), "sweep", str(path))
    assert listing(tmp_path) == ["few.yaml"]


def test_a_sweep_file_over_the_size_cap_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("probe: gmm_pair\n# " + "x" * (2 << 20) + "\n")
    refused(amdm("sweep", path, "--out", tmp_path / "out", cwd=tmp_path, timeout=60), "sweep", str(path), "MiB")


# --------------------------------------------------------------------------------------------
# a scheduler address that accepts TCP but is no dask scheduler


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_listener():
    """A socket that accepts connections and never says a word."""
    sock = socket.create_server(("127.0.0.1", 0))
    accepted, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        sock.close()


@pytest.mark.parametrize("server", ["http_server", pytest.param("silent_listener", marks=pytest.mark.slow)])
def test_a_scheduler_address_that_is_no_dask_scheduler_is_one_line(tmp_path, request, server):
    port = request.getfixturevalue(server)
    path = sweep_file(tmp_path, {"sampler.eta": [0.0]})
    start = time.monotonic()
    done = amdm("sweep", path, "--out", tmp_path / "out", "--scheduler", f"tcp://127.0.0.1:{port}", cwd=tmp_path,
                timeout=60)
    refused(done, "sweep", f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - start < 40
