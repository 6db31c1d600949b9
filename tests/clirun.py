"""``amdm-geom ARGS`` in a process of its own, as a shell runs it, without paying the command's
imports (torch, diffusers, scipy, dask: about five seconds) on every call.

A ``multiprocessing`` forkserver imports the command line once; each call forks a child from it
that becomes its own session (so a test can kill its process group), takes the caller's working
folder, environment and memory limit, unblocks SIGINT with Python's default handler (as a shell
gives a command), writes stdout and stderr to files of its own, and exits with ``cli.main``'s
code. The result is a ``subprocess.CompletedProcess``, like ``subprocess.run``'s. What the child
sees differs from a fresh ``amdm-geom`` in one way only: the modules are already imported, so
nothing here tests import-time behaviour (``tests/test_cli_errors.py`` runs the installed script
for that).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

#: What the forkserver imports once (the command line and what its commands load).
PRELOAD = ["amdm_geom.app.cli", "amdm_geom.app.commands", "amdm_geom.app.validate", "amdm_geom.app.sweep",
           "amdm_geom.probes.specs", "amdm_geom.store", "amdm_geom.app.runner.analysis"]
_context: multiprocessing.context.BaseContext | None = None


def _ctx():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(args: list[str], cwd: str, env: dict, out: str, err: str, limit: int | None) -> None:
    os.setsid()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    from amdm_geom.app import cli

    sys.argv = ["amdm-geom", *args]
    sys.exit(cli.main(args))


def run(*args, cwd: Path, env: dict | None = None, timeout: float = 300,
        limit: int | None = None) -> subprocess.CompletedProcess:
    """``amdm-geom ARGS`` in ``cwd`` with ``os.environ`` updated by ``env``, under an address-space
    ``limit`` (bytes) when given; its process group is killed if it outlives ``timeout`` seconds
    (the test then fails, naming the command)."""
    args = [str(a) for a in args]
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="amdm-cli-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        proc = _ctx().Process(target=_child, args=(args, str(cwd), environ, str(out), str(err), limit))
        proc.start()
        proc.join(timeout)
        hung = proc.exitcode is None
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # (anything it left behind, e.g. dask workers)
        except (ProcessLookupError, PermissionError):
            pass
        proc.join()
        stdout = out.read_text(errors="replace") if out.exists() else ""
        stderr = err.read_text(errors="replace") if err.exists() else ""
    if hung:
        pytest.fail(f"amdm-geom {' '.join(args)} hung: no end within {timeout} s; stderr: {stderr[-2000:]}")
    # (killed by a signal: minus its number, as Popen says it)
    return subprocess.CompletedProcess(["amdm-geom", *args], proc.exitcode, stdout, stderr)
