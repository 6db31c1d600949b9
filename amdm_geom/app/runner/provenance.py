"""A run's provenance for the top of the report: when, which commit of which code, the versions of
the libraries the numbers depend on, the machine. Nothing here touches the network; a value that
cannot be read says so ("unknown") rather than failing the report."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from amdm_geom import __version__

__all__ = ["LIBRARIES", "commit", "provenance"]

#: The libraries whose versions the report names (the numbers depend on them).
LIBRARIES = ("torch", "diffusers", "numpy", "scipy", "xarray", "zarr", "dask", "distributed", "matplotlib")


def commit(where: Path | None = None) -> str:
    """The git commit of the code (``where``: a folder inside its checkout; default this package's),
    with "+ local changes" when the work tree differs; "unknown" outside a git checkout."""
    where = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + local changes" if dirty else head


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def provenance(**run) -> dict[str, str]:
    """``{field: value}``: the run's own fields (``run``: mode, seed, seconds, ...) after the
    creation time, commit, amdm-geom's and Python's versions; then the libraries' versions and
    the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - (not Linux)
        cores = os.cpu_count() or 0
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
            "amdm-geom": __version__, "python": platform.python_version()}
    info.update({k: str(v) for k, v in run.items()})
    info.update({name: _version(name) for name in LIBRARIES})
    info["machine"] = f"{platform.system()} {platform.machine()}, {cores} cores"
    return info
