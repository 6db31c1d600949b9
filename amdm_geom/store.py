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
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
import uuid
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
    "ZarrRecorder",
    "hook_names",
    "latent_dims",
    "open_run",
    "parse_hook_name",
    "run_config",
]

#: Per-model quantities the sampler emits as ``model{i}.<quantity>`` (DESIGN.md hook table).
MODEL_QUANTITIES = ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift")
#: Quantities of the aggregate, emitted as ``agg.<quantity>`` and stored as ``agg_<quantity>``.
AGG_QUANTITIES = ("z",)

_STEP_COORDS = ("t", "t_prev", "alpha_bar", "alpha_bar_prev", "A", "B", "sigma")


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

    ``overwrite=False`` (default) refuses an existing path before any work. ``names_filter``
    selects hook names (a glob, a list of names or globs, or a callable), as in
    TransformerLens' ``names_filter``; ``steps`` selects steps (the others stay unwritten, NaN).
    ``store_dtype`` stores in another dtype than the run's, and says so in the attrs; ``attrs``
    adds JSON-able attributes of the caller's (e.g. which experiment the run belongs to).
    """

    MARK_INTERVAL = 2.0  # seconds between refreshes of steps_completed while running

    def __init__(self, path, *, names_filter=None, overwrite: bool = False,
                 store_dtype: torch.dtype | None = None, background: bool = True, steps=None, attrs=None):
        super().__init__(names_filter, store_dtype, steps, attrs)
        self.path = Path(path)
        self.overwrite = overwrite
        self.background = background
        self.bytes_written = 0
        self.check_path()

    def check_path(self) -> None:
        """One-line FileExistsError if the store exists and ``overwrite`` is off."""
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"trace store {self.path} exists; pass overwrite=True (--overwrite) to replace it")

    def _open(self, plan: RunPlan) -> None:
        self.check_path()
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(self.path), mode="w-", zarr_format=3)
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
        self._group = group
        self._made_dirs: set[Path] = set()
        self._steps_done, self._steps_marked_at = 0, time.monotonic()
        group.attrs.update(plan.attrs())
        local = isinstance(group.store, zarr.storage.LocalStore)
        self._direct_root = Path(group.store.root) if local else None
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None
        if self.background:
            self._queue = queue.Queue(maxsize=64)
            self._thread = threading.Thread(target=self._drain, name="amdm-geom-recorder", daemon=True)
            self._thread.start()

    def _set_attr(self, key, value) -> None:
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
        """Flush every submitted write, then record ``steps_completed`` and ``complete``."""
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
        self._group.attrs.update({"steps_completed": self._steps_done,
                                  "complete": bool(complete and self._error is None)})
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
    """Open a trace store lazily (nothing is read until indexed). One-line FileNotFoundError if
    there is no store at ``path``. Check ``ds.attrs["complete"]`` before trusting later steps."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no trace store at {path}")
    return xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None, zarr_format=3)


def run_config(ds: xr.Dataset) -> dict:
    """The sampler config a store was written with."""
    return json.loads(ds.attrs["config"])
