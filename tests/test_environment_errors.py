"""Errors of the environment, not of the input (issue 22, section 4): a full disk, a read-only
file system, Ctrl-C, a file that is not text, an unreachable scheduler, a sampler given a config
of the wrong type. Each is one line on stderr, ``amdm-geom COMMAND: error: ...``, naming the path
or value and what to do, with the exit code the README documents (2 for a refused input, 74 for
a file system that refused a write, 130 for an interrupt), and nothing created on a refusal.

The full disk and the read-only file system are real: small tmpfs mounts made by the test (it
needs root; without it those tests are skipped)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amdm_geom.app import cli
from tests import clirun
from tests.test_cli_errors import check_one_line

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "sweep.toml"
EXE = Path(sys.executable).with_name("amdm-geom")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TINY = ["--steps", "3", "--batch", "1", "--latent-shape", "4", "8", "8", "--no-progress"]
#: A run long enough (about a second) to be caught while it writes: 200 steps, about 14 MB.
LONG = ["--steps", "200", "--batch", "1", "--latent-shape", "4", "16", "16", "--no-progress"]

EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 2, 74, 130


def amdm(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``amdm-geom ARGS`` in a process of its own (``tests.clirun``: the imports are paid once)."""
    return clirun.run(*args, cwd=cwd, env={"OMP_NUM_THREADS": "1"}, timeout=timeout)


def one_line(err: str, command: str, *expected: str) -> str:
    return check_one_line(err, command, list(expected))


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def closed_port() -> int:
    with socket.socket() as s:  # (a port nobody listens on)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``where`` for the block (unmounted in any case)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    options = f"{'ro,' if read_only else ''}size={size}"
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> None:
    """Write zeros into ``disk`` until it is full."""
    block = bytes(1 << 16)
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with open(disk / "filler2", "wb", buffering=0) as fh:  # (the last partial block)
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 512)


def wait_for(predicate, proc: subprocess.Popen, what: str, seconds: float = 120):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {proc.communicate()}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def started(store: Path, replacing: bool):
    """The folder being written for ``store``: the store itself, or its replacement beside it."""
    def found():
        if not replacing:
            return store if (store / "zarr.json").exists() else None
        return next((p for p in store.parent.glob(f".{store.name}.*.partial") if (p / "zarr.json").exists()), None)
    return found


def complete_attr(store: Path):
    return json.loads((store / "zarr.json").read_text())["attributes"]["complete"]


def snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def ctrl_c_as_in_a_shell() -> None:
    """In the child before it starts: SIGINT delivered and at its default, as a user's shell leaves it. A
    test session whose main thread ignores or blocks SIGINT (as the full suite's did, by the time this
    test ran) would pass either on, and the probe would never see Ctrl-C."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def probe_paused(store: Path, *extra: str, cwd: Path, while_stopped) -> subprocess.CompletedProcess:
    """``probe gmm_pair`` into ``store``, stopped (SIGSTOP) once the run writes, ``while_stopped(proc)``
    done, then continued: what it does lands mid-run however fast the rest of the run would be. SIGINT
    is delivered to the child and at its default, as a user's shell leaves it (``ctrl_c_as_in_a_shell``)."""
    proc = subprocess.Popen([str(EXE), "probe", "gmm_pair", *LONG, "--out", str(store), *extra], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_in_a_shell)
    try:
        wait_for(started(store, "--overwrite" in extra), proc, "the store to be written")
        proc.send_signal(signal.SIGSTOP)
        try:
            while_stopped(proc)
        finally:
            proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def probe_filling_the_disk(disk: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    """``probe gmm_pair`` into ``store`` on ``disk``; the disk is made full once the run writes
    (so the run starts, whatever it checks first, and then meets the full disk)."""
    return probe_paused(store, *extra, cwd=disk.parent, while_stopped=lambda proc: fill(disk))


# --------------------------------------------------------------------------------------------
# a full disk


def test_a_full_disk_is_one_line_and_the_store_is_left_incomplete(tmp_path):
    with tmpfs(tmp_path / "disk", "32m") as disk:
        store = disk / "run.zarr"
        proc = probe_filling_the_disk(disk, store)
        assert proc.returncode == EXIT_ENVIRONMENT, proc.stderr
        line = one_line(proc.stderr, "probe", "no space left on device", str(store), "incomplete")
        assert "free" in line  # what to do
        assert complete_attr(store) is False
        assert not list(disk.glob(".run.zarr.*"))  # no partial copy, no lock left


def test_a_full_disk_during_an_overwrite_keeps_the_old_store(tmp_path):
    with tmpfs(tmp_path / "disk", "32m") as disk:
        store = disk / "run.zarr"
        assert amdm("probe", "gmm_pair", *TINY, "--out", store, cwd=tmp_path).returncode == 0
        before = snapshot(store)
        proc = probe_filling_the_disk(disk, store, "--overwrite")
        assert proc.returncode == EXIT_ENVIRONMENT, proc.stderr
        one_line(proc.stderr, "probe", "no space left on device", str(store), "unchanged")
        assert snapshot(store) == before
        assert not list(disk.glob(".run.zarr.*"))


# --------------------------------------------------------------------------------------------
# a read-only file system


def test_a_sweep_into_a_read_only_file_system_is_refused_before_any_work(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        scheduler = f"tcp://127.0.0.1:{closed_port()}"  # (checked after the folder: never reached)
        for out in (ro / "sweep", ro):  # a new folder on it, and the read-only folder itself
            proc = amdm("sweep", EXAMPLE, "--out", out, "--scheduler", scheduler, "--no-progress", cwd=tmp_path)
            assert proc.returncode == EXIT_USAGE, proc.stderr
            line = one_line(proc.stderr, "sweep", str(out), "read-only file system")
            assert "scheduler" not in line
            assert proc.stdout == ""


# --------------------------------------------------------------------------------------------
# Ctrl-C


def interrupt(store: Path, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    return probe_paused(store, *extra, cwd=cwd, while_stopped=lambda proc: proc.send_signal(signal.SIGINT))


def test_ctrl_c_during_a_probe_is_one_line_and_the_store_is_incomplete(tmp_path):
    store = tmp_path / "run.zarr"
    proc = interrupt(store, cwd=tmp_path)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    one_line(proc.stderr, "probe", "interrupted", str(store), "incomplete", "--overwrite")
    assert complete_attr(store) is False
    assert not (tmp_path / ".run.zarr.lock").exists()  # its lock is released


@pytest.mark.slow
def test_ctrl_c_during_an_overwrite_keeps_the_old_store(tmp_path):
    store = tmp_path / "run.zarr"
    assert amdm("probe", "gmm_pair", *TINY, "--out", store, cwd=tmp_path).returncode == 0
    before = snapshot(store)
    proc = interrupt(store, "--overwrite", cwd=tmp_path)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    one_line(proc.stderr, "probe", "interrupted", str(store), "unchanged")
    assert snapshot(store) == before
    assert not (tmp_path / ".run.zarr.lock").exists()  # its lock is released
    # (a replacement interrupted while zarr's event loop creates its arrays can leave a hidden
    # ".partial" sibling, which the next writer of the store removes; nothing else is left)
    assert all(p.name.endswith(".partial") for p in tmp_path.glob(".run.zarr.*"))


# --------------------------------------------------------------------------------------------
# a file that is not text; an address that does not answer


def test_a_binary_sweep_file_is_one_line_naming_it(tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_bytes(bytes(range(128, 256)) * 4)
    before = listing(tmp_path)
    proc = amdm("sweep", spec, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    one_line(proc.stderr, "sweep", str(spec), "UTF-8")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command", ["sweep", pytest.param("validate", marks=pytest.mark.slow)])
def test_an_unreachable_scheduler_creates_nothing(tmp_path, command):
    scheduler = f"tcp://127.0.0.1:{closed_port()}"
    argv = {"sweep": ["sweep", EXAMPLE, "--out", tmp_path / "new" / "sweep"],
            "validate": ["validate", "--quick", "--runs", tmp_path / "new" / "runs", "--report",
                         tmp_path / "new" / "report"]}[command]
    proc = amdm(*argv, "--scheduler", scheduler, cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    one_line(proc.stderr, command, "dask scheduler", scheduler)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------
# the same kinds, raised anywhere in a command: cli.main finds the cause (in process)


def _raising(exc_factory):
    def run(*args, **kwargs):
        raise exc_factory()
    return run


def _wrapped(inner: OSError) -> BaseException:
    try:
        raise inner
    except OSError as exc:
        try:
            raise RuntimeError(f"writing the trace store x.zarr failed: {exc}") from exc
        except RuntimeError as wrapped:
            return wrapped


def _undecodable(path: Path) -> BaseException:
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return exc
    raise AssertionError("decoded")


@pytest.mark.parametrize("make,code,expected", [
    (lambda d: _wrapped(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), EXIT_ENVIRONMENT,
     ["no space left on device", "{out}", "free"]),
    (lambda d: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(d / "out" / "a.zarr" / "c.0")), EXIT_ENVIRONMENT,
     ["quota", "{out}/a.zarr/c.0"]),
    (lambda d: OSError(errno.EROFS, os.strerror(errno.EROFS), str(d / "out" / "sweep.json")), EXIT_ENVIRONMENT,
     ["read-only file system", "{out}/sweep.json", "writable"]),
    (lambda d: PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(d / "out" / "x")), EXIT_ENVIRONMENT,
     ["permission denied", "{out}/x", "permissions"]),
    (lambda d: _wrapped(OSError(errno.EIO, os.strerror(errno.EIO))), EXIT_ENVIRONMENT,
     ["input/output error", "{out}"]),
    (lambda d: KeyboardInterrupt(), EXIT_INTERRUPTED, ["interrupted", "{out}"]),
    (lambda d: _undecodable(d / "points.yaml"), EXIT_USAGE, ["{dir}/points.yaml", "not UTF-8 text"]),
], ids=["wrapped-enospc", "edquot", "erofs", "eacces", "wrapped-eio", "interrupt", "not-text"])
def test_environment_errors_raised_anywhere_are_one_line(tmp_path, capsys, monkeypatch, make, code, expected):
    (tmp_path / "points.yaml").write_bytes(b"\xff\xfe\x00bad")
    out = tmp_path / "out"
    import amdm_geom.app.sweep

    monkeypatch.setattr(amdm_geom.app.sweep, "sweep", _raising(lambda: make(tmp_path)))
    assert cli.main(["sweep", str(EXAMPLE), "--out", str(out)]) == code
    said = capsys.readouterr()
    one_line(said.err, "sweep", *(e.format(out=out, dir=tmp_path) for e in expected))


def test_an_internal_error_is_still_a_traceback(monkeypatch):
    import amdm_geom.app.sweep

    monkeypatch.setattr(amdm_geom.app.sweep, "sweep", _raising(lambda: ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main(["sweep", str(EXAMPLE), "--out", "/nonexistent-never-created"])


# --------------------------------------------------------------------------------------------
# the Python API


def test_the_sampler_takes_a_dict_config_and_refuses_other_types_in_one_line():
    from amdm_geom.core.spec import SpecError
    from amdm_geom.models.gmm import fine_grained_family
    from amdm_geom.sampling import AMDMSampler, SamplerConfig

    fam = fine_grained_family((4, 8, 8), separation=6.0, seed=2)
    models, conds = [fam.model(name="a"), fam.model(name="b")], [fam.condition(position=0), fam.condition(colour=1)]
    sampler = AMDMSampler(models, conds, {"steps": 3})
    assert sampler.config == AMDMSampler(models, conds, SamplerConfig(num_inference_steps=3)).config
    assert sampler.sample([0]).model_calls == AMDMSampler(models, conds, SamplerConfig(steps=3)).sample([0]).model_calls
    with pytest.raises(SpecError, match="num_inference_steps must be an int >= 1; got 0"):
        AMDMSampler(models, conds, {"steps": 0})
    for bad, shown in [(3, "int"), ("steps=3", "str"), ([("steps", 3)], "list")]:
        with pytest.raises(TypeError) as info:
            AMDMSampler(models, conds, bad)
        text = str(info.value)
        assert "\n" not in text and shown in text and "SamplerConfig" in text and "dict" in text, text
