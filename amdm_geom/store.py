"""The trace store: one sampler run as one zarr group, opened as an ``xarray.Dataset``.

Schema (DESIGN.md, written down before the code, in the manner of ArviZ's InferenceData):

- dims: ``step``, ``model``, ``sample``, then the latent's own dims (``channel``, ``height``,
  ``width`` for image latents, ``dim`` for vectors, ``d0``, ``d1``, ... otherwise). Every dim
  has an integer coordinate.
- variables: one per hook quantity. ``z``, ``eps``, ``x0``, ``mu``, ``noise``, ``z_next``,
  ``mu_shift``, ``z_shift`` and any extra per-model quantity are ``(step, model, sample,
  *latent)``; ``agg_z`` (the aggregated z') is ``(step, sample, *latent)``. Stored in the run's
  dtype (the recorder never changes it silently; ``attrs["dtype"]`` says which). Slots a run
  never wrote (models that stopped after the aggregation window, steps outside it for
  ``agg_z``, steps after an interruption) read as NaN.
- step coordinates (model 0's schedule): ``t``, ``t_prev``, ``alpha_bar``, ``alpha_bar_prev``,
  ``A``, ``B``, ``sigma`` and boolean ``aggregated``; every model's own ``model_alpha_bar``,
  ``model_alpha_bar_prev``, ``model_A``, ``model_B``, ``model_sigma`` over ``(model, step)``
  (they differ only in cross-ecosystem runs); ``seed`` over ``sample``.
- attrs: ``config`` (the full sampler config and model descriptions, JSON), ``seeds``,
  ``versions`` (JSON), ``created_at``, ``creation_library``, ``dtype``, ``hook_names``,
  ``steps_completed`` (refreshed every few seconds while a run is in flight, exact at its end,
  also when it fails) and ``complete`` (false until the last step is on disk).

Writes go into preallocated arrays, one chunk per (step, model), never a per-step append.
On a local store the recorder writes each chunk's bytes itself (the uncompressed zarr v3
chunk format, atomically: a temporary file, then a rename) from a background thread, so
recording overlaps with model evaluation; other stores go through zarr's own assignment.

Safety (nothing lost, nothing faked):

- A trace store is recognisable: ``is_trace_store`` checks that a folder's ``zarr.json`` is a
  zarr v3 group whose attributes carry this toolkit's metadata (``creation_library`` starting
  with ``amdm-geom``, ``config``, ``dtype``, ``hook_names``, ``complete``,
  ``steps_completed``). The recorder writes them when it creates the group, so even a store
  whose run was killed at once is recognisable.
- ``overwrite`` replaces only a trace store; a plain folder, a file, a link or a foreign zarr
  group is refused (``StoreError``, one line) before any work, and again when the run starts.
- Replacing is atomic: the new run is written into a hidden sibling
  ``.<name>.<hex>.partial`` and swapped into place only when it ends complete. A run that
  fails, is interrupted or is killed leaves the old store byte for byte as it was. A run into a
  new path writes in place, so an interrupted one leaves a readable store with
  ``complete = false`` and every finished step intact.
- One writer per store: see ``ZarrRecorder`` (an OS lock beside the store). Readers are never
  blocked.
- ``open_run`` refuses anything that is not a trace store in one line, and ``require``,
  ``steps_completed``, ``is_complete``, ``completed_steps`` and ``incomplete_note`` let
  analyses say what a store lacks instead of crashing on a ``KeyError``.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import functools
import json
import os
import queue
import re
import shutil
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr

from . import __version__

__all__ = [
    "AGG_QUANTITIES",
    "MODEL_QUANTITIES",
    "MemoryRecorder",
    "RunPlan",
    "StoreError",
    "ZarrRecorder",
    "check_output_path",
    "completed_steps",
    "hook_names",
    "incomplete_note",
    "is_complete",
    "is_trace_store",
    "latent_dims",
    "open_run",
    "parse_hook_name",
    "require",
    "run_config",
    "steps_completed",
]

#: Per-model quantities the sampler emits as ``model{i}.<quantity>`` (DESIGN.md hook table).
MODEL_QUANTITIES = ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift")
#: Quantities of the aggregate, emitted as ``agg.<quantity>`` and stored as ``agg_<quantity>``.
AGG_QUANTITIES = ("z",)

_STEP_COORDS = ("t", "t_prev", "alpha_bar", "alpha_bar_prev", "A", "B", "sigma")
_MISSING = object()


def latent_dims(latent_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dim names of a per-sample latent shape."""
    if len(latent_shape) == 3:
        return ("channel", "height", "width")
    if len(latent_shape) == 1:
        return ("dim",)
    return tuple(f"d{i}" for i in range(len(latent_shape)))


def hook_names(n_models: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Every hook name a run of ``n_models`` can emit, per-model quantities then the aggregate."""
    names = [f"model{i}.{q}" for i in range(n_models) for q in (*MODEL_QUANTITIES, *extra)]
    return names + [f"agg.{q}" for q in AGG_QUANTITIES]


def parse_hook_name(name: str) -> tuple[str, int | None]:
    """``"model1.mu" -> ("mu", 1)``; ``"agg.z" -> ("agg_z", None)``."""
    site, _, quantity = name.partition(".")
    if not quantity:
        raise ValueError(f"hook names look like 'model0.z' or 'agg.z'; got {name!r}")
    if site == "agg":
        return f"agg_{quantity}", None
    if site.startswith("model") and site[5:].isdigit():
        return quantity, int(site[5:])
    raise ValueError(f"hook names look like 'model0.z' or 'agg.z'; got {name!r}")


@dataclass
class RunPlan:
    """What a recorder needs to lay out a run before its first step."""

    names: list[str]  # the hook names that will be recorded (after the filter)
    n_models: int
    seeds: list[int]
    latent_shape: tuple[int, ...]
    dtype: torch.dtype
    coefficients: list[xr.Dataset]  # ddim_coefficients per model, over step
    aggregated: np.ndarray  # (step,) bool
    config: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return self.coefficients[0].sizes["step"]

    @property
    def batch(self) -> int:
        return len(self.seeds)

    def variables(self) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
        """Store variable name -> (dims, shape), in a stable order."""
        ldims = latent_dims(self.latent_shape)
        out = {}
        for name in self.names:
            var, model = parse_hook_name(name)
            if model is None:
                out[var] = (("step", "sample", *ldims), (self.n_steps, self.batch, *self.latent_shape))
            else:
                out[var] = (("step", "model", "sample", *ldims),
                            (self.n_steps, self.n_models, self.batch, *self.latent_shape))
        return out

    def coords(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """Coordinate name -> (dims, values)."""
        c0 = self.coefficients[0]
        out = {
            "step": (("step",), np.arange(self.n_steps)),
            "model": (("model",), np.arange(self.n_models)),
            "sample": (("sample",), np.arange(self.batch)),
            "seed": (("sample",), np.asarray(self.seeds, dtype=np.int64)),
            "aggregated": (("step",), np.asarray(self.aggregated, dtype=bool)),
        }
        for dim, size in zip(latent_dims(self.latent_shape), self.latent_shape):
            out[dim] = ((dim,), np.arange(size))
        for name in _STEP_COORDS:
            out[name] = (("step",), c0[name].values)
        for name in ("alpha_bar", "alpha_bar_prev", "A", "B", "sigma"):
            out[f"model_{name}"] = (("model", "step"), np.stack([c[name].values for c in self.coefficients]))
        return out

    def attrs(self) -> dict:
        return {
            "config": json.dumps(self.config, sort_keys=True, default=str),
            "seeds": [int(s) for s in self.seeds],
            "versions": json.dumps(_versions(), sort_keys=True),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "creation_library": f"amdm-geom {__version__}",
            "dtype": _dtype_name(self.dtype),
            "hook_names": list(self.names),
            "steps_completed": 0,
            "complete": False,
            "recorded_steps": "all",
        }


def _versions() -> dict:
    import diffusers
    import scipy

    return {"amdm_geom": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "xarray": xr.__version__,
            "zarr": zarr.__version__}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype == torch.bfloat16:
        raise ValueError("bfloat16 runs cannot be stored without a dtype change; record with store_dtype=torch.float32")
    return torch.empty((), dtype=dtype).numpy().dtype


# --------------------------------------------------------------------------------------------
# what a trace store is, and the checks before writing one


class StoreError(ValueError):
    """A path that cannot be written or read as a trace store as asked. The message is one line
    that names the path and says why."""


#: Attributes every trace store carries from the moment its group is created.
_REQUIRED_ATTRS = ("config", "dtype", "hook_names", "complete", "steps_completed", "creation_library")
_LIBRARY = "amdm-geom"


def _store_problem(path: Path) -> str | None:
    """Why ``path`` is not a trace store (a short phrase), or None if it is one."""
    try:
        if not os.path.lexists(path):
            return "nothing there"
        if not path.is_dir():
            return "a file, not a folder"
        meta = path / "zarr.json"
        if not meta.is_file():
            return "no zarr.json"
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            return "zarr.json is not readable JSON"
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
            return "not a zarr v3 store"
        if doc.get("node_type") != "group":
            return "zarr.json is not a zarr group"
        attrs = doc.get("attributes")
        if not isinstance(attrs, dict):
            attrs = {}
        for key in _REQUIRED_ATTRS:
            if key not in attrs:
                return f"attribute {key!r} missing"
        library = attrs["creation_library"]
        if not isinstance(library, str) or not library.startswith(_LIBRARY):
            return f"written by {library!r}, not {_LIBRARY}"
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def is_trace_store(path) -> bool:
    """Whether ``path`` is a folder whose ``zarr.json`` is a zarr v3 group carrying this toolkit's
    metadata (``creation_library`` starting with "amdm-geom", ``config``, ``dtype``,
    ``hook_names``, ``complete``, ``steps_completed``). Never raises."""
    return _store_problem(Path(path)) is None


def _absolute(path) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def check_output_path(path, overwrite: bool = False) -> None:
    """Check that a trace store may be written at ``path``, without touching anything: the same
    checks ``ZarrRecorder`` makes before it takes its lock, for callers that validate every
    output path before any work.

    - Nothing at ``path``: fine, provided its parent folder exists or can be created, and is
      writable (otherwise ``StoreError``).
    - A trace store: ``FileExistsError`` unless ``overwrite``.
    - Anything else (a plain folder, a file, a link, a foreign zarr group): ``FileExistsError``
      without ``overwrite``, ``StoreError`` with it (only trace stores are ever replaced).

    Every message is one line naming the path and saying why."""
    target = _absolute(path)
    if target.name in ("", ".", ".."):
        raise StoreError(f"cannot write a trace store at {path}: name a folder for it, such as {path}/run.zarr")
    if os.path.islink(target):
        if overwrite:
            raise StoreError(f"refusing to overwrite {path}: it is a symbolic link (name the store's real path)")
        raise FileExistsError(f"{path} exists (a symbolic link); choose another --out")
    if os.path.lexists(target):
        why = _store_problem(target)
        if why is None and not overwrite:
            raise FileExistsError(f"trace store {path} exists; pass overwrite=True (--overwrite) to replace it")
        if why is not None:
            if overwrite:
                raise StoreError(f"refusing to overwrite {path}: not an amdm-geom trace store ({why})")
            raise FileExistsError(f"{path} exists and is not an amdm-geom trace store ({why}); choose another --out")
    probe = target.parent
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"cannot write trace store {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write trace store {path}: {probe} is not writable")


# --------------------------------------------------------------------------------------------
# one writer per store: an OS lock beside it

_LIVE_LOCKS: weakref.WeakSet = weakref.WeakSet()


class _StoreLock:
    """``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<parent>/.<name>.lock``, holding the writer's PID.

    The lock file is deleted on release, so the usual pattern applies: open, lock, then check
    that the locked file is still the one at the path (a releasing holder may have unlinked it
    between our open and our lock); if not, start over. Only the holder deletes it, while still
    holding it. The OS drops the lock when its holder dies, so a lock file left by a killed
    process (its PID long gone) is simply locked again and rewritten."""

    def __init__(self, store: Path, shown: Path):
        self.store, self.shown = store, shown
        self.path = store.parent / f".{store.name}.lock"
        self.fd: int | None = None
        self.pid = os.getpid()

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot lock trace store {self.shown}: {exc.strerror or exc} ({self.path})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                holder = _read_pid(fd) if busy else None
                os.close(fd)
                if not busy:
                    why = exc.strerror or exc
                    raise StoreError(f"cannot lock trace store {self.shown}: {why} ({self.path})") from None
                raise StoreError(_held_message(self.shown, holder)) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it after our open: try the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd, self.pid = fd, os.getpid()
            _LIVE_LOCKS.add(self)
            return
        raise StoreError(f"cannot lock trace store {self.shown}: its lock file {self.path} keeps changing")

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        _LIVE_LOCKS.discard(self)
        try:
            # only the process that took the lock deletes the file (a forked child holding a
            # copy of the descriptor must not), and only while it still is the locked file
            if os.getpid() == self.pid and os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The PID a lock holder wrote (it writes right after locking, so retry briefly)."""
    for _ in range(20):
        try:
            data = os.pread(fd, 64, 0)
            return int(data.split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.01)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_message(shown: Path, pid: int | None) -> str:
    if pid is None:
        return f"trace store {shown} is being written by another process; wait for it or choose another --out"
    if pid == os.getpid():
        return (f"trace store {shown} is being written by process {pid} (this process: another ZarrRecorder "
                f"on it is still open; end or close() it first)")
    if not _alive(pid):
        return (f"trace store {shown} is being written by a process that process {pid} (no longer running) "
                f"started; wait for it or choose another --out")
    return f"trace store {shown} is being written by process {pid}; wait for it or choose another --out"


@atexit.register
def _release_all_locks() -> None:
    for lock in list(_LIVE_LOCKS):
        lock.release()


# --------------------------------------------------------------------------------------------
# replacing a store atomically: hidden siblings, the swap, and what killed runs leave behind


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.{kind}")


def _leftovers(target: Path) -> list[Path]:
    """The ``.partial`` and ``.trash`` siblings of ``target`` (exactly its own, never those of
    another store whose name starts the same)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{32}}\.(partial|trash)")
    try:
        return sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:
        return []


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _clean_leftovers(target: Path) -> None:
    """Remove what killed writers left beside ``target``; call with its lock held. A writer
    killed between the two renames of a fallback swap leaves no store and the old one as
    ``.trash``: that old store is put back first."""
    leftovers = _leftovers(target)
    if not os.path.lexists(target):
        for trash in sorted((p for p in leftovers if p.name.endswith(".trash")),
                            key=lambda p: p.stat().st_mtime, reverse=True):
            if is_trace_store(trash):
                os.rename(trash, target)
                leftovers.remove(trash)
                break
    for path in leftovers:
        _remove(path)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=1)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``). False where
    the system or the file system cannot; then nothing happened."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(new: Path, target: Path) -> None:
    """Put the finished store ``new`` at ``target`` (an existing store) and remove the old one.
    Atomic where ``renameat2`` can exchange the two; elsewhere two renames (old aside to a
    ``.trash`` sibling, new into place) that a later writer repairs if killed between them."""
    if _exchange(new, target):
        _remove(new)  # now the old store
        return
    trash = _sibling(target, "trash")
    os.rename(target, trash)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(trash, target)
        raise
    _remove(trash)


class _Recorder:
    """Common recorder logic: the sampler calls ``begin(plan)``, ``record(name, step, value)``
    for each wanted hook, ``end_step(step)`` after each step and ``end(complete)`` once."""

    def __init__(self, names_filter=None, store_dtype: torch.dtype | None = None, steps=None, attrs=None):
        self.names_filter = names_filter
        self.store_dtype = store_dtype
        self.steps = None if steps is None else frozenset(int(k) for k in steps)
        self.extra_attrs = dict(attrs or {})
        self.plan: RunPlan | None = None

    def wants(self, step: int) -> bool:
        """Whether this step is recorded (all steps unless ``steps`` was given)."""
        return self.steps is None or step in self.steps

    def begin(self, plan: RunPlan) -> None:
        if self.plan is not None:
            raise RuntimeError("a recorder records one run; make a new one for the next run")
        if self.store_dtype is not None:
            plan.dtype = self.store_dtype
        self.plan = plan
        self._np_dtype = _numpy_dtype(plan.dtype)
        self._layout = plan.variables()
        self._open(plan)
        if self.steps is not None:
            self._set_attr("recorded_steps", sorted(self.steps))
        for key, value in self.extra_attrs.items():
            self._set_attr(key, value)

    def _as_numpy(self, value: torch.Tensor) -> np.ndarray:
        """A numpy view of the value (a copy only when the device or dtype changes): the sampler
        emits fresh tensors and never modifies one in place after emitting it."""
        return value.detach().to("cpu").numpy().astype(self._np_dtype, copy=False)

    def _index(self, name: str, step: int):
        var, model = parse_hook_name(name)
        return var, ((step,) if model is None else (step, model))

    def _open(self, plan: RunPlan) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def end_step(self, step: int) -> None:  # pragma: no cover - overridden
        pass


class MemoryRecorder(_Recorder):
    """Records into preallocated numpy arrays; ``dataset()`` gives the same schema as a store.
    Behind ``AMDMSampler.run_with_cache``."""

    def _open(self, plan: RunPlan) -> None:
        self._arrays = {var: np.full(shape, np.nan, dtype=self._np_dtype)
                        for var, (_, shape) in self._layout.items()}
        self._attrs = plan.attrs()

    def record(self, name: str, step: int, value: torch.Tensor) -> None:
        if not self.wants(step):
            return
        var, index = self._index(name, step)
        self._arrays[var][index] = self._as_numpy(value)

    def end_step(self, step: int) -> None:
        self._attrs["steps_completed"] = step + 1

    def end(self, complete: bool) -> None:
        self._attrs["complete"] = bool(complete)

    def _set_attr(self, key, value) -> None:
        self._attrs[key] = value

    def dataset(self) -> xr.Dataset:
        if self.plan is None:
            raise RuntimeError("nothing recorded yet")
        data = {var: (dims, self._arrays[var]) for var, (dims, _) in self._layout.items()}
        return xr.Dataset(data, coords=self.plan.coords(), attrs=dict(self._attrs))


class ZarrRecorder(_Recorder):
    """Records a run into a zarr group at ``path`` (see the module docstring for the schema).

    ``overwrite=False`` (default) refuses an existing path before any work; ``overwrite=True``
    replaces only an amdm-geom trace store (anything else is refused with ``StoreError``), and
    atomically: the new run goes into a hidden sibling ``.<name>.<hex>.partial`` that is swapped
    into place when the run ends complete; until then, and for ever if the run fails, is
    interrupted or is killed, the old store stays as it was. ``names_filter`` selects hook names
    (a glob, a list of names or globs, or a callable), as in TransformerLens' ``names_filter``;
    ``steps`` selects steps (the others stay unwritten, NaN). ``store_dtype`` stores in another
    dtype than the run's, and says so in the attrs; ``attrs`` adds JSON-able attributes of the
    caller's (e.g. which experiment the run belongs to).

    One writer per store. The constructor takes an exclusive, non-blocking ``fcntl.flock`` on
    the hidden lock file ``<parent>/.<name>.lock`` and writes its PID into it, so a second
    writer of the same path (in this process or another) is refused at once with a
    ``StoreError`` naming the holder's PID. The lock is released by ``end()`` (the sampler calls
    it when the run ends, also when it fails), by ``close()`` (or leaving a ``with`` block), when
    the recorder is garbage-collected, at interpreter exit, and by the OS when the process dies.
    The lock file is deleted on release (open, lock, then check that the locked file is still
    the one at the path, else retry); one left by a killed process is harmless: the next writer
    locks it and rewrites the PID. That writer, holding the lock, also removes the ``.partial``
    and ``.trash`` siblings killed runs left. Readers (``open_run``) never take the lock.
    """

    MARK_INTERVAL = 2.0  # seconds between refreshes of steps_completed while running

    def __init__(self, path, *, names_filter=None, overwrite: bool = False,
                 store_dtype: torch.dtype | None = None, background: bool = True, steps=None, attrs=None):
        super().__init__(names_filter, store_dtype, steps, attrs)
        self.path = Path(path)
        self.overwrite = overwrite
        self.background = background
        self.bytes_written = 0
        self._target = _absolute(self.path)
        self._lock: _StoreLock | None = None
        self._partial: Path | None = None
        self._group = None
        self._queue: queue.Queue | None = None
        self._begun = self._ended = False
        self.check_path()
        try:
            self._target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write trace store {self.path}: {exc.strerror or exc}") from None
        lock = _StoreLock(self._target, self.path)
        lock.acquire()
        self._lock = lock
        try:
            _clean_leftovers(self._target)
            self.check_path()  # again, now that no other writer can change the path
        except BaseException:
            self._release()
            raise

    def check_path(self) -> None:
        """``check_output_path(path, overwrite)``: one-line ``FileExistsError`` if something is
        at the path and ``overwrite`` is off, ``StoreError`` if ``overwrite`` is on and it is
        not a trace store (or the parent folder cannot be written)."""
        check_output_path(self.path, self.overwrite)

    # -- the lock's lifetime ---------------------------------------------------------------------

    def __enter__(self) -> ZarrRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock. A run that began and did not end is ended as incomplete first (a
        replacement's partial copy is removed; the old store stays)."""
        if self._begun and not self._ended:
            self.end(False)
        else:
            self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __del__(self) -> None:
        try:
            if not self.__dict__.get("_ended", True) and self.__dict__.get("_partial") is not None:
                _remove(self._partial)
            lock = self.__dict__.get("_lock")
            if lock is not None:
                lock.release()
        except Exception:  # never raise from a finalizer  # pragma: no cover
            pass

    # -- laying out the run ----------------------------------------------------------------------

    def begin(self, plan: RunPlan) -> None:
        if self._lock is None and self.plan is None:
            raise StoreError(f"the recorder for {self.path} was closed; make a new one")
        try:
            super().begin(plan)
        except BaseException:
            if self.plan is plan:  # this run's layout failed: nothing of it is kept
                self._abort()
            raise

    def _abort(self) -> None:
        """End a run whose layout failed: stop the writer thread, remove a partial copy, unlock."""
        self._ended = True
        try:
            if self._queue is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
        finally:
            if self._partial is not None:
                _remove(self._partial)
                self._partial = None
            self._release()

    def _open(self, plan: RunPlan) -> None:
        self._begun = True
        self.check_path()
        if os.path.lexists(self._target):  # a trace store, and overwrite is on: replace it at the end
            self._partial = _sibling(self._target, "partial")
            root = self._partial
        else:
            root = self._target
        attrs = plan.attrs()  # identifying attrs from the group's creation on
        if self.steps is not None:
            attrs["recorded_steps"] = sorted(self.steps)
        attrs.update(self.extra_attrs)
        group = zarr.open_group(str(root), mode="w-", zarr_format=3, attributes=attrs)
        self._group = group
        coords = plan.coords()
        for name, (dims, values) in coords.items():
            arr = group.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
                                     compressors=None, fill_value=0, dimension_names=dims)
            arr[...] = values
        coord_names = " ".join(n for n, (dims, _) in coords.items() if n not in dims)
        self._arrays = {}
        for var, (dims, shape) in self._layout.items():
            chunks = (1, 1, *shape[2:]) if "model" in dims else (1, *shape[1:])
            # "." chunk keys keep each variable's chunks as flat files in one folder (the default
            # "/" nests a folder per dimension, and creating those dominated the write time)
            self._arrays[var] = group.create_array(
                var, shape=shape, chunks=chunks, dtype=self._np_dtype, compressors=None,
                fill_value=np.nan, dimension_names=dims, attributes={"coordinates": coord_names},
                chunk_key_encoding={"name": "default", "separator": "."})
        self._made_dirs: set[Path] = set()
        self._steps_done, self._steps_marked_at = 0, time.monotonic()
        local = isinstance(group.store, zarr.storage.LocalStore)
        self._direct_root = Path(group.store.root) if local else None
        self._error: BaseException | None = None
        if self.background:
            self._queue = queue.Queue(maxsize=64)
            self._thread = threading.Thread(target=self._drain, name="amdm-geom-recorder", daemon=True)
            self._thread.start()

    def _set_attr(self, key, value) -> None:
        if self._group.attrs.get(key, _MISSING) != value:  # already written at creation
            self._group.attrs[key] = value

    # -- writing ---------------------------------------------------------------------------------

    def record(self, name: str, step: int, value: torch.Tensor) -> None:
        if not self.wants(step):
            return
        var, index = self._index(name, step)
        self._submit(("chunk", var, index, self._as_numpy(value)))

    def end_step(self, step: int) -> None:
        self._submit(("step", step))

    def end(self, complete: bool) -> None:
        """Flush every submitted write, then record ``steps_completed`` and ``complete``. A
        replacement is swapped into place if it is complete, else removed (the old store stays).
        The lock is released in any case."""
        if self._ended:
            return
        self._ended = True
        try:
            if self._queue is not None:
                self._queue.put(None)
                self._thread.join()
            ok = bool(complete and self._error is None)
            self._group.attrs.update({"steps_completed": self._steps_done, "complete": ok})
            if self._partial is not None and ok:
                _swap_into_place(self._partial, self._target)
                self._partial = None
        finally:
            if self._partial is not None:  # an incomplete replacement: the old store stays
                _remove(self._partial)
                self._partial = None
            self._release()
        if self._error is not None:
            raise RuntimeError(f"writing the trace store {self.path} failed: {self._error}") from self._error

    def _submit(self, item) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the trace store {self.path} failed: {self._error}") from self._error
        if self._queue is None:
            self._do(item)
        else:
            self._queue.put(item)

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._do(item)
                except BaseException as exc:  # reported to the sampler's thread on its next call
                    self._error = exc

    def _do(self, item) -> None:
        if item[0] == "step":
            # every chunk of this step is on disk; the count in the attrs is refreshed at most
            # every MARK_INTERVAL seconds while running (a killed run's count errs low) and
            # exactly at the end, also when the run fails
            self._steps_done = item[1] + 1
            if time.monotonic() - self._steps_marked_at >= self.MARK_INTERVAL:
                self._group.attrs["steps_completed"] = self._steps_done
                self._steps_marked_at = time.monotonic()
            return
        _, var, index, block = item
        arr = self._arrays[var]
        if self._direct_root is None:
            arr[index] = block
        else:
            coords = (*index, *([0] * (arr.ndim - len(index))))
            path = self._direct_root / var / arr.metadata.encode_chunk_key(coords)
            if path.parent not in self._made_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(path.parent)
            _write_atomic(path, np.ascontiguousarray(block).astype(block.dtype.newbyteorder("<"), copy=False))
        self.bytes_written += block.nbytes


def _write_atomic(path: Path, block: np.ndarray) -> None:
    """The bytes of one uncompressed little-endian C-order chunk, via a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with open(tmp, "wb") as fh:
        fh.write(memoryview(block).cast("B"))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# reading


def open_run(path) -> xr.Dataset:
    """Open a trace store lazily (nothing is read until indexed). One-line ``FileNotFoundError``
    if there is no zarr group at ``path``, one-line ``StoreError`` if there is one but it is not
    a trace store (a foreign group, or one without this toolkit's attributes). A store whose
    run is still going, failed or was killed opens too: see ``is_complete``, ``completed_steps``
    and ``incomplete_note``. The path is kept in ``ds.encoding["source"]``."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no trace store at {path}")
    why = _store_problem(path)
    if why is not None:
        raise StoreError(f"{path} is not an amdm-geom trace store: {why}")
    ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None, zarr_format=3)
    ds.encoding["source"] = str(path)
    return ds


def run_config(ds: xr.Dataset) -> dict:
    """The sampler config a store was written with."""
    require(ds, attrs=("config",))
    return json.loads(ds.attrs["config"])


def _source(ds: xr.Dataset) -> str:
    return str(ds.encoding.get("source") or "(in memory)")


def _one_of(names) -> tuple:
    return (names,) if isinstance(names, str) else tuple(names)


def require(ds: xr.Dataset, variables=(), attrs=(), hints: dict | None = None) -> None:
    """One-line ``StoreError`` naming the store and the first of ``variables`` (data variables
    or coordinates) or ``attrs`` it lacks, with ``hints[name]`` in parentheses if given, e.g.
    ``store runs/a.zarr lacks variable 'eps_cross' (record with --cross-eps)``."""
    hints = hints or {}
    for kind, names, present in (("variable", variables, ds.variables), ("attribute", attrs, ds.attrs)):
        for name in _one_of(names):
            if name not in present:
                hint = f" ({hints[name]})" if hints.get(name) else ""
                raise StoreError(f"store {_source(ds)} lacks {kind} {name!r}{hint}")


def steps_completed(ds: xr.Dataset) -> int:
    """How many steps, from the first, are on disk (``attrs["steps_completed"]``, clipped to
    [0, number of steps])."""
    require(ds, attrs=("steps_completed",))
    try:
        k = int(ds.attrs["steps_completed"])
    except (TypeError, ValueError):
        raise StoreError(f"store {_source(ds)} has a steps_completed that is not a count: "
                         f"{ds.attrs['steps_completed']!r}") from None
    return min(max(k, 0), int(ds.sizes.get("step", 0)))


def is_complete(ds: xr.Dataset) -> bool:
    """Whether the run ended with every step on disk."""
    require(ds, attrs=("complete",))
    flag = ds.attrs["complete"]
    flag = flag.strip().lower() == "true" if isinstance(flag, str) else bool(flag)
    return flag and steps_completed(ds) == int(ds.sizes.get("step", 0))


def completed_steps(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` restricted to its finished steps ``[0, steps_completed)`` (attrs and the source
    path kept); all of it for a complete store."""
    if "step" not in ds.dims:
        raise StoreError(f"store {_source(ds)} has no steps (its run wrote no arrays)")
    out = ds.isel(step=slice(0, steps_completed(ds)))
    out.attrs = dict(ds.attrs)
    out.encoding = {**ds.encoding, **out.encoding}
    return out


def incomplete_note(ds: xr.Dataset) -> str:
    """"" for a complete store, else "incomplete store: k of T steps" (for result notes)."""
    if is_complete(ds):
        return ""
    return f"incomplete store: {steps_completed(ds)} of {int(ds.sizes.get('step', 0))} steps"
