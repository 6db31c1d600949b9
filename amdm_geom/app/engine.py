"""The one runner of independent work on dask.distributed, for ``amdm-geom sweep``,
``amdm-geom validate`` and the analyses that run their own stores (``ablations``).

Work is a list of ``Task``: a module-level function, its arguments, and the keys of the tasks it
waits for (an analysis waits for the probes whose stores it reads). ``Engine`` connects to a
scheduler, by default a ``LocalCluster`` of one-thread worker processes sized to the machine, or
an existing cluster at ``scheduler="tcp://host:port"`` (``dask scheduler``; ``dask worker ADDR
--nworkers N --nthreads 1``; its workers must see the paths the tasks write, so give them
absolute); an address that does not answer, or answers but is not a dask scheduler (an HTTP
server, a silent port), is one line within ``CONNECT_TIMEOUT`` seconds (``handshake``).
``Engine.run`` submits every task, reports each as it finishes (``on_done``) and returns their
outcomes: a failed task is reported with its error and does not stop the others (the tasks that
wait for it are "not run").

Every task runs with one torch thread (``timed``), so results do not depend on the number of
workers or where a task lands: every sample has its own generator (``amdm_geom.sampling``).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amdm_geom.app.runner.analysis import resolve, run_analysis
from amdm_geom.app.runner.registry import run_maker
from amdm_geom.core.budget import cores

__all__ = ["CONNECT_TIMEOUT", "Engine", "EngineError", "Outcome", "Task", "analysis_tasks", "cores", "handshake",
           "one_line", "run_spec", "timed"]

#: Seconds to wait for an existing scheduler to answer: to connect, and to reply to the handshake.
CONNECT_TIMEOUT = 3


class EngineError(ValueError):
    """A scheduler that cannot be reached, or tasks that cannot be run as given (one line)."""


@dataclass(frozen=True)
class Task:
    """One piece of work: ``fn(*args, **kwargs)`` (``fn`` importable by workers: a module-level
    function) once the tasks named in ``after`` are done; higher ``priority`` starts first."""

    key: str
    fn: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    priority: int = 0


@dataclass
class Outcome:
    """What a task gave: its ``value`` and ``seconds`` when done, its one-line ``error`` when it
    failed (or waited for a task that failed)."""

    key: str
    value: Any = None
    seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}"


def timed(fn: Callable, args: tuple, kwargs: dict, *_after) -> tuple[Any, float]:
    """Run ``fn(*args, **kwargs)`` with one torch thread; ``(value, seconds)``. (``_after``: the
    results of the tasks waited for, unused: they only order the work.)"""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def run_spec(kind: str, name: str, spec_json: str) -> str:
    """Run a spec given as JSON with the registered probe ``name`` (``kind="probe"``) or the
    registered analysis ``name``'s own runs (``kind="analysis"``), found through the registry
    (``registry.run_maker``: nothing else is loaded, and any other name is one line); the store's
    path."""
    module = run_maker(kind, name)
    return str(module.run(module.Spec.model_validate_json(spec_json), quiet=True))


def handshake(address: str, timeout: float = CONNECT_TIMEOUT) -> dict:
    """Ask the dask scheduler at ``address`` who it is (the comm's handshake and one ``identity``
    message, as a client starts); its reply, a dict whose ``type`` is ``"Scheduler"``.
    ``EngineError`` (one line) if nothing is reached within ``timeout`` seconds (a closed port:
    ``distributed``'s own connect gives up), if the handshake or the reply takes a second more
    (its connect bounds the TCP connection but not the handshake after it, so a port that
    accepts and never answers, e.g. an HTTP server waiting for a request, would hold a
    ``Client`` for ever), or if what answers is not a dask scheduler. At most 2 ``timeout`` + 1
    seconds. Runs in a thread of its own, so it works under a running event loop too (a
    notebook)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    from distributed.comm import connect
    from distributed.security import Security

    class Silent(Exception):
        """Connected, but no handshake or reply in time."""

    async def ask() -> object:
        try:
            comm = await asyncio.wait_for(connect(address, timeout=timeout, **Security().get_connection_args("client")),
                                          timeout + 1)
        except asyncio.TimeoutError:
            raise Silent from None
        try:
            await comm.write({"op": "identity", "reply": True})
            return await asyncio.wait_for(comm.read(), timeout)
        except asyncio.TimeoutError:
            raise Silent from None
        finally:
            comm.abort()

    hint = "start one with 'dask scheduler' or leave out --scheduler"
    pool = ThreadPoolExecutor(1, thread_name_prefix="amdm-geom-handshake")
    try:
        reply = pool.submit(asyncio.run, ask()).result(2 * timeout + 3)
    except (Silent, FutureTimeout):
        raise EngineError(f"no dask scheduler answered at {address}: something accepts connections there but did "
                          f"not complete dask's handshake within {timeout + 1:g} s (another service?); {hint}"
                          ) from None
    except Exception as exc:  # noqa: BLE001 - (any failure to connect or to read a reply is one line)
        raise EngineError(f"cannot reach the dask scheduler at {address} within {timeout:g} s ({one_line(exc)}); "
                          f"{hint}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
        shown = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise EngineError(f"what answers at {address} is not a dask scheduler (it says it is {shown!r}); {hint}")
    return reply


class Engine:
    """A client of a dask scheduler for ``run``: ``with Engine(workers=2) as engine: ...``.

    ``scheduler``: an existing scheduler's address (``None``: a new ``LocalCluster`` of
    ``workers`` one-thread processes, default ``cores()``; closed on exit)."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise EngineError(f"workers must be an int >= 1; got {workers!r}")
        self.scheduler, self.workers = scheduler, workers
        self.client = self.cluster = self._config = None

    def __enter__(self) -> Engine:
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            handshake(self.scheduler)
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                raise EngineError(f"cannot reach the dask scheduler at {self.scheduler} within {CONNECT_TIMEOUT} s "
                                  f"({one_line(exc)}); start one with 'dask scheduler' or leave out --scheduler"
                                  ) from None
            return self
        import dask

        # Two dask defaults that slow torch code on its workers (measured on 2 cores): the nanny starts
        # them with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand every freed tensor back to the OS
        # (the quick digits benchmark 33 s -> 51 s); and each worker samples its stacks every 10 ms for
        # the dashboard's profile (the quick 2D benchmark 16.9 s -> 18.7 s). Both are off for the workers
        # this engine starts (and restarts). And a worker is handed a task only when its thread is free
        # (saturation 1.0), so no ready task waits behind a busy worker while the other idles.
        self._config = dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                        "distributed.worker.profile.enabled": False,
                                        "distributed.scheduler.worker-saturation": 1.0})
        try:
            self.cluster = LocalCluster(n_workers=self.workers or cores(), threads_per_worker=1, processes=True,
                                        dashboard_address=":0", silence_logs=logging.ERROR,
                                        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        except BaseException:
            self._config.__exit__(None, None, None)
            raise
        try:
            self.client = Client(self.cluster)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self._config is not None:
            self._config.__exit__(None, None, None)
        self.client = self.cluster = self._config = None

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    @property
    def n_workers(self) -> int:
        """The workers the scheduler has now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def describe(self) -> str:
        """One line: the scheduler, its workers and the dashboard."""
        return f"dask scheduler {self.address} ({self.n_workers} workers); dashboard {self.client.dashboard_link}"

    def run(self, tasks: Iterable[Task], *, on_done: Callable[[Outcome], None] | None = None,
            progress: bool = False, desc: str = "tasks") -> dict[str, Outcome]:
        """Run every task, each once the tasks it names (which must come earlier in ``tasks``)
        are done; ``on_done(outcome)`` as each finishes; ``{key: Outcome}`` in ``tasks``' order.

        A task is submitted when it is ready, not before: dask then hands it to whichever worker
        is free, highest ``priority`` first (earlier tasks first among equals), rather than queue
        it behind the worker that ran what it waited for (its inputs are files, not data dask
        moves). A task that waits for a failed one is not run."""
        from distributed import as_completed
        from tqdm.auto import tqdm

        tasks = list(tasks)
        _check_order(tasks)
        token = uuid.uuid4().hex[:8]
        outcomes = {t.key: Outcome(t.key) for t in tasks}
        waiting, by_future, finished = list(tasks), {}, set()
        bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress, file=sys.stderr)
        running = as_completed()

        def finish(out: Outcome) -> None:
            finished.add(out.key)
            bar.update()
            if on_done is not None:
                on_done(out)

        def release() -> None:  # submit what is ready; mark what waits for a failure as not run
            changed = True
            while changed:
                changed = False
                for t in [t for t in waiting if all(k in finished for k in t.after)]:
                    waiting.remove(t)
                    failed = [k for k in t.after if not outcomes[k].ok]
                    if failed:
                        outcomes[t.key].error = f"not run: {', '.join(failed)} failed"
                        finish(outcomes[t.key])
                        changed = True
                        continue
                    future = self.client.submit(timed, t.fn, t.args, t.kwargs, key=f"{t.key}-{token}", pure=False,
                                                priority=t.priority)
                    by_future[future] = t
                    running.add(future)

        release()
        for future in running:
            out = outcomes[by_future.pop(future).key]
            try:
                out.value, out.seconds = future.result()
            except Exception as exc:  # noqa: BLE001 - (a failed task is reported; the others go on)
                out.error = one_line(exc)
            finish(out)
            release()
        bar.close()
        return outcomes


def _check_order(tasks: list[Task]) -> None:
    """One-line EngineError unless the keys are distinct and each task waits only for earlier ones."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise EngineError(f"task keys must be distinct; got {sorted({k for k in keys if keys.count(k) > 1})}")
    seen: set[str] = set()
    for t in tasks:
        missing = [k for k in t.after if k not in seen]
        if missing:
            raise EngineError(f"task {t.key!r} waits for {', '.join(map(repr, missing))}, which is not before it")
        seen.add(t.key)


def analysis_tasks(analysis, stores: dict | None, out, *, quick: bool = False, seed: int = 0, runs=None,
                   after: tuple[str, ...] = (), priority: int | None = None) -> list[Task]:
    """The tasks of one analysis (a registered name, or an ``Analysis``): where it plans its own
    runs (its ``run_module`` and ``planned``, given no stores and a ``runs`` folder) one task per
    run first, then the analysis itself (``amdm_geom.app.runner.run_analysis`` into ``out``) on
    ``stores`` or on those runs' stores, after them and after ``after``, with ``priority`` (by
    default its own; its runs: 0). Its key is ``"analysis NAME"``, its runs' ``"NAME run RUN"``."""
    analysis = resolve(analysis)
    tasks = []
    if not stores and runs is not None and analysis.run_module is not None:
        specs = analysis.planned(quick=quick, seed=seed, runs=Path(runs))
        tasks = [Task(f"{analysis.name} run {run}", run_spec, ("analysis", analysis.name, spec.model_dump_json()))
                 for run, spec in specs.items()]
        stores = {run: spec.run.out for run, spec in specs.items()}
        after = (*after, *(t.key for t in tasks))
    tasks.append(Task(f"analysis {analysis.name}", run_analysis, (analysis.name, stores or None, out),
                      {"quick": quick, "seed": seed, "runs": runs}, after=after,
                      priority=analysis.priority if priority is None else priority))
    return tasks
