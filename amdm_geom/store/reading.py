"""Reading trace stores: ``open_run`` and what analyses need to say what a store lacks."""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from ..sampling.config import SamplerConfig
from .paths import StoreError, _store_problem
from .urls import UrlStore, is_url, locate

# --------------------------------------------------------------------------------------------
# reading


def open_run(path, storage_options: dict | None = None) -> xr.Dataset:
    """Open a trace store lazily (nothing is read until indexed): a local path, or an fsspec URL
    (``memory://...``, ``s3://...``; ``storage_options`` go to its file system) read through
    zarr's ``FsspecStore``. One-line ``FileNotFoundError`` if there is no zarr group at ``path``,
    one-line ``StoreError`` if there is one but it is not a trace store (a foreign group, or one
    without this toolkit's attributes) or the URL cannot be used. A store whose run is still
    going, failed or was killed opens too: see ``is_complete``, ``completed_steps`` and
    ``incomplete_note``. The path or URL is kept in ``ds.encoding["source"]``."""
    where = locate(path, storage_options)
    shown = str(path) if is_url(path) else Path(path)
    why = where.problem() if isinstance(where, UrlStore) else _store_problem(where)
    if why in ("nothing there", "a file, not a folder", "no zarr.json"):
        raise FileNotFoundError(f"no trace store at {shown}")
    if why is not None:
        raise StoreError(f"{shown} is not an amdm-geom trace store: {why}")
    store = where.zarr_store(read_only=True) if isinstance(where, UrlStore) else where
    ds = xr.open_dataset(store, engine="zarr", consolidated=False, chunks=None, zarr_format=3)
    ds.encoding["source"] = str(shown)
    return ds


def run_config(ds: xr.Dataset) -> dict:
    """The run's description as stored: ``{"sampler": ..., "etas": ..., "models": ...,
    "conditions": ...}`` (JSON-able data; ``sampler_config`` gives the typed settings, and
    ``amdm_geom.probes.spec_of`` the typed probe spec the store was made from)."""
    require(ds, attrs=("config",))
    return json.loads(ds.attrs["config"])


def sampler_config(ds: xr.Dataset) -> SamplerConfig:
    """The typed ``SamplerConfig`` a store was written with (equal to the one the run used)."""
    return SamplerConfig.model_validate(run_config(ds)["sampler"])


def step_kinds(ds: xr.Dataset) -> list[str]:
    """Each model's step, ``"ddim"`` or ``"flow"`` (App. G's Euler step, whose store records
    ``v`` where DDIM records ``eps``); stores written before flow models existed are DDIM."""
    kinds = ds.attrs.get("step_kinds")
    n = ds.sizes.get("model", 1)
    return [str(k) for k in kinds] if kinds is not None else ["ddim"] * n


def step_input(ds: xr.Dataset, model: int) -> str:
    """The variable that multiplies B in ``mu = A z + B <it>`` for ``model``: ``eps`` or ``v``."""
    return "v" if step_kinds(ds)[model] == "flow" else "eps"


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
