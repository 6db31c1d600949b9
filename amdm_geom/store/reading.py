"""Reading trace stores: ``open_run`` and what analyses need to say what a store lacks (a run's
settings: ``settings``)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import xarray as xr

from amdm_geom.store.identity import StoreError, store_problem
from amdm_geom.store.integrity import LEGACY_NOTE, DamagedStoreError, check_store
from amdm_geom.store.urls import UrlStore, is_url, locate

__all__ = ["completed_steps", "incomplete_note", "is_complete", "open_run", "require", "source_of", "step_input",
           "step_kinds", "steps_completed", "verify_run"]

_log = logging.getLogger("amdm_geom.store")
_LEGACY_SAID: set[str] = set()

# --------------------------------------------------------------------------------------------
# reading


def open_run(path, storage_options: dict | None = None) -> xr.Dataset:
    """Open a trace store lazily (nothing is read until indexed): a local path, or an fsspec URL
    (``memory://...``, ``s3://...``; ``storage_options`` go to its file system) read through
    zarr's ``FsspecStore``. One-line ``FileNotFoundError`` if there is no zarr group at ``path``,
    one-line ``StoreError`` if there is one but it is not a trace store (a foreign group, or one
    without this toolkit's attributes) or the URL cannot be used. A store whose run is still
    going, failed or was killed opens too: see ``is_complete``, ``completed_steps`` and
    ``incomplete_note``. The path or URL is kept in ``ds.encoding["source"]``.

    Before anything is read, the store's structure is checked against what its writer recorded
    (``integrity.check_store``: every array's shape and chunks as planned, every chunk of every
    completed step present and, uncompressed, of its written size): a damaged store raises
    ``DamagedStoreError``, one line naming the store, the variable and the chunk. Each chunk's
    CRC-32C is then checked by zarr whenever it is read (``verify_run`` checks them all at once).
    A store written before checksums opens as before, said once per store on the
    ``amdm_geom.store`` logger."""
    where, shown = _located(path, storage_options)
    _checked(where, shown, checksums=False)
    store = where.zarr_store(read_only=True) if isinstance(where, UrlStore) else where
    with warnings.catch_warnings():  # (a file a user put in the store is not read, and not ours to warn about)
        warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component of a Zarr")
        ds = xr.open_dataset(store, engine="zarr", consolidated=False, chunks=None, zarr_format=3)
    ds.encoding["source"] = str(shown)
    return ds


def _located(path, storage_options):
    """``(where, shown)`` of a trace store: one-line ``FileNotFoundError`` if there is none,
    ``StoreError`` if what is there is not one."""
    where = locate(path, storage_options)
    shown = str(path) if is_url(path) else Path(path)
    why = where.problem() if isinstance(where, UrlStore) else store_problem(where)
    if why in ("nothing there", "a file, not a folder", "no zarr.json"):
        raise FileNotFoundError(f"no trace store at {shown}")
    if why is not None:
        raise StoreError(f"{shown} is not an amdm-geom trace store: {why}")
    return where, shown


def _root_attrs(where, shown) -> dict:
    text = where.fs.cat_file(f"{where.root}/zarr.json") if isinstance(where, UrlStore) else \
        (where / "zarr.json").read_bytes()
    try:
        return dict(json.loads(text).get("attributes") or {})
    except (ValueError, AttributeError):
        raise DamagedStoreError(f"damaged store {shown}: its zarr.json is not readable") from None


def _checked(where, shown, *, checksums: bool) -> bool:
    """``check_store`` on the store at ``where``; the legacy note once per store."""
    if check_store(where, _root_attrs(where, shown), str(shown), checksums=checksums):
        return True
    if str(shown) not in _LEGACY_SAID:
        _LEGACY_SAID.add(str(shown))
        _log.warning("store %s was %s", shown, LEGACY_NOTE)
    return False


def verify_run(path, storage_options: dict | None = None) -> bool:
    """Check a trace store whole before an analysis reads it: ``open_run``'s structural check and
    every chunk's CRC-32C. Raises ``DamagedStoreError`` (one line naming the store, the variable
    and the chunk), ``FileNotFoundError`` or ``StoreError`` as ``open_run`` does. Returns False
    for a store written before checksums (nothing more can be verified), True otherwise."""
    where, shown = _located(path, storage_options)
    return _checked(where, shown, checksums=True)


def step_kinds(ds: xr.Dataset) -> list[str]:
    """Each model's step, ``"ddim"`` or ``"flow"`` (App. G's Euler step, whose store records
    ``v`` where DDIM records ``eps``); stores written before flow models existed are DDIM."""
    kinds = ds.attrs.get("step_kinds")
    n = ds.sizes.get("model", 1)
    return [str(k) for k in kinds] if kinds is not None else ["ddim"] * n


def step_input(ds: xr.Dataset, model: int) -> str:
    """The variable that multiplies B in ``mu = A z + B <it>`` for ``model``: ``eps`` or ``v``."""
    return "v" if step_kinds(ds)[model] == "flow" else "eps"


def source_of(ds: xr.Dataset) -> str:
    """Where ``ds`` was opened from (``open_run`` keeps it), or "(in memory)", for messages."""
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
                raise StoreError(f"store {source_of(ds)} lacks {kind} {name!r}{hint}")


def steps_completed(ds: xr.Dataset) -> int:
    """How many steps, from the first, are on disk (``attrs["steps_completed"]``, at least 0).
    A count above the store's number of steps means its arrays were cut after the run: a
    ``DamagedStoreError``, never a silent clip."""
    require(ds, attrs=("steps_completed",))
    try:
        k = int(ds.attrs["steps_completed"])
    except (TypeError, ValueError):
        raise StoreError(f"store {source_of(ds)} has a steps_completed that is not a count: "
                         f"{ds.attrs['steps_completed']!r}") from None
    n = int(ds.sizes.get("step", 0))
    if k > n:
        raise DamagedStoreError(f"damaged store {source_of(ds)}: {k} steps recorded as completed but its arrays "
                                f"hold {n}")
    return max(k, 0)


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
        raise StoreError(f"store {source_of(ds)} has no steps (its run wrote no arrays)")
    out = ds.isel(step=slice(0, steps_completed(ds)))
    out.attrs = dict(ds.attrs)
    out.encoding = {**ds.encoding, **out.encoding}
    return out


def incomplete_note(ds: xr.Dataset) -> str:
    """"" for a complete store, else "incomplete store: k of T steps" (for result notes)."""
    if is_complete(ds):
        return ""
    return f"incomplete store: {steps_completed(ds)} of {int(ds.sizes.get('step', 0))} steps"
