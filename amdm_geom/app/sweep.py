"""Sweeps on dask.distributed: every grid point of a sweep file (``amdm_geom.app.sweep_spec``) is one
task that runs its probe into its own trace store.

- The tasks run on ``amdm_geom.app.engine`` (the runner ``validate`` uses too): by default a
  ``LocalCluster`` of ``min(points, cores)`` worker processes of one thread each;
  ``scheduler="tcp://host:port"`` uses an existing cluster (its workers must see the stores'
  paths, which are made absolute). An address that does not answer is one line.
- Each task runs ``load_probe(name).run(spec, quiet=True)`` with one torch thread.
- A sweep started again skips the stores that are complete (untouched: not opened for writing)
  and redoes the rest (an incomplete store is replaced atomically, see ``amdm_geom.store``).
- The folder OUT is checked before any work (a file there, a read-only file system or a folder
  not writable is one line) and made only once the cluster answers, so that a refused sweep or
  an address that does not answer leaves nothing behind.
- A failed task is reported with its point and error; the others go on. ``OUT/sweep.json``
  records every point (values, store, status, seconds, error), rewritten as tasks finish.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

from amdm_geom.app.engine import Engine, EngineError, Outcome, Task, cores, run_spec
from amdm_geom.app.runner.registry import load_probe
from amdm_geom.app.sweep_spec import Point, SweepError, load_sweep
from amdm_geom.store import check_output_path, is_complete, is_trace_store, open_run

__all__ = ["RECORD", "EngineError", "SweepError", "check_folder", "plan", "run_sweep", "sweep"]

#: The record of a sweep, beside its stores.
RECORD = "sweep.json"
#: ``sweep.json``'s ``creation_library`` (how ``amdm-geom clean`` recognises it).
LIBRARY = "amdm-geom sweep"


def _complete(store: Path) -> bool:
    """Whether ``store`` is a complete trace store (one being written, or unreadable, is not)."""
    if not is_trace_store(store):
        return False
    try:
        with warnings.catch_warnings():  # (a store mid-write has arrays without their metadata yet)
            warnings.simplefilter("ignore")
            with open_run(store) as ds:
                return is_complete(ds)
    except (OSError, ValueError, KeyError):
        return False


def check_folder(out) -> None:
    """Check, without creating anything, that the sweep's folder ``out`` can be written: it is a
    folder or can be made in the nearest existing folder above it, which is writable. One line
    (``SweepError``) naming it otherwise, e.g. on a read-only file system."""
    path = Path(os.path.abspath(out))
    if os.path.lexists(path) and not path.is_dir():
        raise SweepError(f"the sweep's folder {out} is a file, not a folder; choose another --out")
    base = path
    while not os.path.lexists(base):
        base = base.parent
    if not base.is_dir():
        raise SweepError(f"cannot make the sweep's folder {out}: {base} is a file, not a folder; choose another --out")
    if not os.access(base, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "is on a read-only file system" if read_only else "is not writable"
        raise SweepError(f"cannot write the sweep into {out}: {base} {why}; choose another --out")


def plan(points: list[Point]) -> dict[str, bool]:
    """``{name: done}``: which points' stores are complete already. The others must be writable:
    a foreign folder where a store goes is refused (``StoreError``, one line) before any task. An
    empty folder there is what a point killed as its store was being created leaves (before its
    zarr.json): it is removed, and the point redone."""
    done = {}
    for p in points:
        done[p.name] = _complete(p.store)
        if not done[p.name]:
            if p.store.is_dir() and not p.store.is_symlink() and not any(p.store.iterdir()):
                p.store.rmdir()
            check_output_path(p.store, overwrite=p.store.exists())
    return done


def _record(out: Path, probe: str, source: str, rows: list[dict], address: str) -> None:
    doc = {"creation_library": LIBRARY, "probe": probe, "spec_file": source, "scheduler": address,
           "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "points": rows}
    tmp = out / f".{RECORD}.{uuid.uuid4().hex}.partial"
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, out / RECORD)


def run_sweep(probe: str, points: list[Point], out, *, scheduler: str | None = None, workers: int | None = None,
              source: str = "", progress: bool = True) -> list[dict]:
    """Run every point not yet complete as a task on dask.distributed; the rows of
    ``OUT/sweep.json`` (one per point: ``name``, ``values``, ``store``, ``status`` in done /
    skipped / failed, ``seconds``, ``error``). ``out`` is checked before anything else and made
    only once the cluster is up, so a refused folder or address leaves nothing behind."""
    out = Path(out)
    check_folder(out)
    done = plan(points)
    rows = [{"name": p.name, "values": p.values, "store": str(p.store), "status": "skipped" if done[p.name] else
             "pending", "seconds": None, "error": None} for p in points]
    by_name = {r["name"]: r for r in rows}
    todo = [p for p in points if not done[p.name]]
    for p in points:
        if done[p.name]:
            print(f"skipped {p.name}: {p.store} is complete", file=sys.stderr)
    if not todo and scheduler is None:
        out.mkdir(parents=True, exist_ok=True)
        _record(out, probe, source, rows, "(none: nothing to do)")
        return rows
    load_probe(probe)  # (a probe that does not load is one line here, before the cluster starts)
    tasks = [Task(p.name, run_spec, ("probe", probe, p.spec.replace(run=p.spec.run.replace(
        overwrite=p.store.exists())).model_dump_json())) for p in todo]
    # (an address is checked even with nothing to do)
    with Engine(scheduler, workers or min(len(todo), cores()) if scheduler is None else None) as engine:
        print(engine.describe(), file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        _record(out, probe, source, rows, engine.address)

        def done_(outcome: Outcome) -> None:
            row = by_name[outcome.key]
            if outcome.ok:
                row.update(status="done", seconds=round(float(outcome.seconds), 3))
            else:
                row.update(status="failed", error=outcome.error)
                print(f"failed {row['name']} ({row['store']}): {row['error']}", file=sys.stderr)
            _record(out, probe, source, rows, engine.address)

        engine.run(tasks, on_done=done_, progress=progress, desc=f"sweep {probe}")
    return rows


def sweep(spec_file, out, *, scheduler: str | None = None, workers: int | None = None,
          progress: bool = True, force_size: bool = False) -> list[dict]:
    """Read, check and run the sweep file ``spec_file`` into ``out`` (``run_sweep``'s rows).
    Every point, and the folder, is checked before any task starts (``SweepError`` naming the
    point and field, or the folder); so are the points' sizes, unless ``force_size``."""
    check_folder(out)
    probe, points = load_sweep(spec_file, out, force_size=force_size)
    return run_sweep(probe, points, out, scheduler=scheduler, workers=workers, source=str(spec_file),
                     progress=progress)
