"""Recorders attach to the sampler's hook points: ``begin(plan)``, ``record(name, step, value,
offset)`` for each wanted hook (``value`` holds samples ``offset .. offset + len(value)`` of the
run: the whole batch, or one chunk of it), ``end_step(step)`` after each step whose every sample
is recorded (so, in a run in chunks, only during the last chunk), ``end(complete)`` once. ``Recorder``
is their common logic; ``MemoryRecorder`` keeps a run in preallocated numpy arrays and gives it
back as an ``xarray.Dataset`` with the trace schema (behind ``AMDMSampler.run_with_cache``).
The zarr recorder lives in the trace layer (``amdm_geom.store``)."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from amdm_geom.sampling.hooks import parse_hook_name
from amdm_geom.sampling.plan import RunPlan, numpy_dtype

__all__ = ["MemoryRecorder", "Recorder"]


class Recorder:
    """Common recorder logic: the sampler calls ``begin(plan)``, ``record(name, step, value,
    offset)`` for each wanted hook, ``end_step(step)`` once every sample of a step is recorded
    and ``end(complete)`` once."""

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
        self._np_dtype = numpy_dtype(plan.dtype)
        self._layout = plan.variables()
        self._open(plan)

    def initial_attrs(self, plan: RunPlan) -> dict:
        """The attributes a record starts with: the plan's (its one spec made from a ``spec`` given in
        ``attrs``: ``RunPlan.spec``), ``recorded_steps`` and the other ``attrs``."""
        extra = dict(self.extra_attrs)
        attrs = plan.attrs(extra.pop("spec", None))
        if self.steps is not None:
            attrs["recorded_steps"] = sorted(self.steps)
        attrs.update(extra)
        return attrs

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


class MemoryRecorder(Recorder):
    """Records into preallocated numpy arrays; ``dataset()`` gives the same schema as a store.
    Behind ``AMDMSampler.run_with_cache``."""

    def _open(self, plan: RunPlan) -> None:
        self._arrays = {var: np.full(shape, np.nan, dtype=self._np_dtype)
                        for var, (_, shape) in self._layout.items()}
        self._attrs = self.initial_attrs(plan)

    def record(self, name: str, step: int, value: torch.Tensor, offset: int = 0) -> None:
        if not self.wants(step):
            return
        var, index = self._index(name, step)
        self._arrays[var][(*index, slice(offset, offset + value.shape[0]))] = self._as_numpy(value)

    def end_step(self, step: int) -> None:
        self._attrs["steps_completed"] = step + 1

    def end(self, complete: bool) -> None:
        self._attrs["complete"] = bool(complete)

    def dataset(self) -> xr.Dataset:
        if self.plan is None:
            raise RuntimeError("nothing recorded yet")
        data = {var: (dims, self._arrays[var]) for var, (dims, _) in self._layout.items()}
        return xr.Dataset(data, coords=self.plan.coords(), attrs=dict(self._attrs))
