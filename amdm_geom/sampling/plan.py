"""The layout of one run, handed to every recorder before the first step: which hook names are
recorded, the step coordinates of every model's schedule, the seeds and the provenance
attributes. It is the trace schema (README, "Store schema") written down before any storage:
the in-memory cache here and the zarr store of ``amdm_geom.store`` lay out the same arrays.

A run keeps one spec (``attrs["spec"]``, JSON): the spec it was made from (a probe's, given to the
recorder), or ``{"sampler": ...}`` for a sampler run by code, with its ``sampler`` always the
Algorithm 1 settings as the run used them (``RunPlan.spec``). What that spec built (each model's
description, each condition, how the cross terms were evaluated) is ``attrs["built"]``.
``amdm_geom.store.settings`` reads both back, typed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
import xarray as xr

from amdm_geom import __version__
from amdm_geom.sampling.config import SamplerConfig
from amdm_geom.sampling.hooks import latent_dims, parse_hook_name

__all__ = ["FLOW_COORDS", "STEP_COORDS", "RunPlan", "dtype_name", "numpy_dtype"]

STEP_COORDS = ("t", "t_prev", "alpha_bar", "alpha_bar_prev", "A", "B", "sigma")
#: A flow's own step coordinates (``flow_schedules.flow_coefficients``): its noise level s, the next one
#: and dt = s_next - s; NaN for a DDIM model's rows in a run that mixes the two.
FLOW_COORDS = ("flow_sigma", "flow_sigma_next", "dt")


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
    config: SamplerConfig = field(default_factory=SamplerConfig)  # Algorithm 1's settings as the run uses them
    built: dict = field(default_factory=dict)  # what the spec built: models, conditions, cross_terms (JSON-able)
    chunk_size: int | None = None  # samples per chunk the sampler runs (and records) at once; None: all

    @property
    def sample_chunk(self) -> int:
        """Samples per recorded block: each ``record`` call holds at most this many, starting at a
        multiple of it (a store may chunk its arrays by it)."""
        return self.batch if self.chunk_size is None else min(self.chunk_size, self.batch)

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
        for name in STEP_COORDS:
            out[name] = (("step",), c0[name].values)
        for name in ("alpha_bar", "alpha_bar_prev", "A", "B", "sigma"):
            out[f"model_{name}"] = (("model", "step"), np.stack([c[name].values for c in self.coefficients]))
        if any("flow_sigma" in c for c in self.coefficients):
            nan = np.full(self.n_steps, np.nan)
            for name in FLOW_COORDS:
                rows = [c[name].values if name in c else nan for c in self.coefficients]
                out[name] = (("step",), rows[0])
                out[f"model_{name}"] = (("model", "step"), np.stack(rows))
        return out

    @property
    def step_kinds(self) -> list[str]:
        """Each model's step: ``"flow"`` (App. G's Euler step) or ``"ddim"``."""
        return ["flow" if c.attrs.get("kind") == "flow" else "ddim" for c in self.coefficients]

    def spec(self, given: str | None = None) -> str:
        """The run's one spec as JSON: ``given`` (a spec's JSON, e.g. a probe's) or ``{}``, its
        ``sampler`` set to the settings the run used (a spec may fix some: ``RunSpec.config()``;
        a one-model run drops the unused default weight), so that the kept spec runs the same run."""
        data = json.loads(given) if given is not None else {"sampler": None}
        if not isinstance(data, dict) or "sampler" not in data:
            raise ValueError(f"a run's spec must be a JSON object with its sampler settings at 'sampler' (a "
                             f"RunSpec's); got {given[:60]!r}")
        data["sampler"] = json.loads(self.config.model_dump_json())
        return json.dumps(data)

    def attrs(self, spec: str | None = None) -> dict:
        """The store's attributes at its creation (README, "Store schema"); ``spec``: the spec the
        run was made from, as JSON (``spec()``)."""
        return {
            "spec": self.spec(spec),
            "built": json.dumps(self.built, sort_keys=True, default=str),
            "seeds": [int(s) for s in self.seeds],
            "versions": json.dumps(_versions(), sort_keys=True),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "creation_library": f"amdm-geom {__version__}",
            "dtype": dtype_name(self.dtype),
            "hook_names": list(self.names),
            "step_kinds": self.step_kinds,
            "steps_completed": 0,
            "complete": False,
            "recorded_steps": "all",
        }


def _versions() -> dict:
    """The versions of the libraries a run's numbers depend on (read from the installed
    distributions, so nothing is imported for it)."""
    out = {"amdm_geom": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("diffusers", "scipy", "xarray", "zarr"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[dist] = "missing"
    return out


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype == torch.bfloat16:
        raise ValueError("bfloat16 runs cannot be stored without a dtype change; record with store_dtype=torch.float32")
    return torch.empty((), dtype=dtype).numpy().dtype
