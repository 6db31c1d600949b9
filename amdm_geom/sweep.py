"""Sweeps on dask.distributed: every grid point of a sweep file (``amdm_geom.sweep_spec``) is one
task that runs its probe into its own trace store.

- By default a ``LocalCluster`` of ``min(points, cores)`` worker processes of one thread each;
  ``scheduler="tcp://host:port"`` uses an existing cluster (``dask scheduler``, ``dask worker
  ADDR --nworkers N --nthreads 1``; its workers must see the stores' paths, which are made
  absolute). An address that does not answer is one line within ``CONNECT_TIMEOUT`` seconds.
- Each task sets torch's threads to 1 and runs ``load_probe(name).run(spec, quiet=True)``.
- A sweep started again skips the stores that are complete (untouched: not opened for writing)
  and redoes the rest (an incomplete store is replaced atomically, see ``amdm_geom.store``).
- A failed task is reported with its point and error; the others go on. ``OUT/sweep.json``
  records every point (values, store, status, seconds, error), rewritten as tasks finish.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .sweep_spec import Point, SweepError, load_sweep

__all__ = ["CONNECT_TIMEOUT", "RECORD", "SweepError", "plan", "run_point", "run_sweep", "sweep"]

#: Seconds to wait for an existing scheduler to answer.
CONNECT_TIMEOUT = 3
#: The record of a sweep, beside its stores.
RECORD = "sweep.json"
#: ``sweep.json``'s ``creation_library`` (how ``amdm-geom clean`` recognises it).
LIBRARY = "amdm-geom sweep"


def run_point(probe: str, spec_json: str) -> float:
    """The task: run probe ``probe`` on its spec (JSON) with one torch thread; its seconds."""
    import torch

    from .runner.registry import load_probe

    torch.set_num_threads(1)
    module = load_probe(probe)
    spec = module.Spec.model_validate_json(spec_json)
    start = time.perf_counter()
    module.run(spec, quiet=True)
    return time.perf_counter() - start


def _complete(store: Path) -> bool:
    """Whether ``store`` is a complete trace store (one being written, or unreadable, is not)."""
    import warnings

    from .store import is_complete, is_trace_store, open_run

    if not is_trace_store(store):
        return False
    try:
        with warnings.catch_warnings():  # (a store mid-write has arrays without their metadata yet)
            warnings.simplefilter("ignore")
            with open_run(store) as ds:
                return is_complete(ds)
    except (OSError, ValueError, KeyError):
        return False


def plan(points: list[Point]) -> dict[str, bool]:
    """``{name: done}``: which points' stores are complete already. The others must be writable:
    a foreign folder where a store goes is refused (``StoreError``, one line) before any task. An
    empty folder there is what a point killed as its store was being created leaves (before its
    zarr.json): it is removed, and the point redone."""
    from .store import check_output_path

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


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}"


def _connect(scheduler: str | None, n_workers: int):
    """``(client, cluster or None)``: a client of the scheduler at ``scheduler``, or of a new
    ``LocalCluster`` of ``n_workers`` one-thread worker processes."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"cannot reach the dask scheduler at {scheduler} within {CONNECT_TIMEOUT} s "
                             f"({_one_line(exc)}); start one with 'dask scheduler' or leave out --scheduler") from None
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - (not Linux)
        return os.cpu_count() or 1


def run_sweep(probe: str, points: list[Point], out, *, scheduler: str | None = None, workers: int | None = None,
              source: str = "", progress: bool = True) -> list[dict]:
    """Run every point not yet complete as a task on dask.distributed; the rows of
    ``OUT/sweep.json`` (one per point: ``name``, ``values``, ``store``, ``status`` in done /
    skipped / failed, ``seconds``, ``error``)."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = plan(points)
    rows = [{"name": p.name, "values": p.values, "store": str(p.store), "status": "skipped" if done[p.name] else
             "pending", "seconds": None, "error": None} for p in points]
    by_name = {r["name"]: r for r in rows}
    todo = [p for p in points if not done[p.name]]
    for p in points:
        if done[p.name]:
            print(f"skipped {p.name}: {p.store} is complete", file=sys.stderr)
    if not todo and scheduler is None:
        _record(out, probe, source, rows, "(none: nothing to do)")
        return rows
    client, cluster = _connect(scheduler, workers or min(len(todo), _cores()))  # (an address is checked anyway)
    try:
        address = client.scheduler.address
        print(f"dask scheduler {address}; dashboard {client.dashboard_link}", file=sys.stderr)
        _record(out, probe, source, rows, address)
        token = uuid.uuid4().hex[:8]
        futures = {}
        for p in todo:
            spec = p.spec.replace(run=p.spec.run.replace(overwrite=p.store.exists()))
            future = client.submit(run_point, probe, spec.model_dump_json(), key=f"amdm-sweep-{p.name}-{token}",
                                   pure=False)
            futures[future] = p
        bar = tqdm(as_completed(futures), total=len(futures), desc=f"sweep {probe}", unit="point",
                   disable=not progress, file=sys.stderr)
        for future in bar:
            row = by_name[futures[future].name]
            try:
                row.update(status="done", seconds=round(float(future.result()), 3))
            except Exception as exc:  # noqa: BLE001 - (a failed point is reported; the others go on)
                row.update(status="failed", error=_one_line(exc))
                bar.write(f"failed {row['name']} ({row['store']}): {row['error']}", file=sys.stderr)
            _record(out, probe, source, rows, address)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows


def sweep(spec_file, out, *, scheduler: str | None = None, workers: int | None = None,
          progress: bool = True) -> list[dict]:
    """Read, check and run the sweep file ``spec_file`` into ``out`` (``run_sweep``'s rows).
    Every point is checked before any task starts (``SweepError`` naming the point and field)."""
    probe, points = load_sweep(spec_file, out)
    return run_sweep(probe, points, out, scheduler=scheduler, workers=workers, source=str(spec_file),
                     progress=progress)
