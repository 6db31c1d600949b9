"""What several analyses share in reading a trace store's slots: written or not, finite or not.

A slot is one model's (or the aggregate's) value at one step, all samples: ``(sample, ...)``.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import stats

from amdm_geom.store import completed_steps, incomplete_note, open_run, require

__all__ = ["CHUNK_BYTES", "LATENT_HINTS", "both_sampled", "checked_store", "finite_cells", "finite_or_none",
           "finite_samples", "latent_block", "open_store", "paired_difference", "partial_data", "pooled_partial",
           "refuse_stores", "rejection_band", "sample_slices", "scatter", "slot_written", "slot_written_streamed",
           "store_sample_chunk", "streamed"]

#: How to record what Prop. 3.1's analyses read, for ``require``'s one-line errors.
LATENT_HINTS = {"z_next": "record the hook model*.z_next", "z": "record the hook model*.z",
                "eps": "record the hook model*.eps", "noise": "record the hook model*.noise"}


#: The most bytes one float64 block of latents ``(samples, n)`` read by a streaming analysis may take: the
#: samples are read in slices of the store's own sample chunks, as many whole chunks as fit (at least one).
CHUNK_BYTES = 32 * 2**20


def slot_written(block) -> bool:
    """Whether the run wrote this slot (one model's, or the aggregate's, value at one step, all
    samples): slots a run never wrote read as NaN throughout, so a slot is unwritten iff every
    value in it is NaN. A written slot with some NaN or inf is written, and non-finite."""
    return not bool(np.isnan(np.asarray(block)).all())


def finite_samples(*blocks) -> np.ndarray:
    """``(sample,)`` bool: true for the samples whose every entry, in every block
    ``(sample, ...)``, is finite. A sample is non-finite at a step if any value it uses is NaN
    or inf; such samples are excluded from every statistic and counted."""
    ok = np.ones(len(blocks[0]), dtype=bool)
    for b in blocks:
        b = np.asarray(b)
        ok &= np.isfinite(b.reshape(b.shape[0], -1)).all(axis=1)
    return ok


def scatter(ok: np.ndarray, values: dict) -> dict:
    """Per-sample values computed on the finite samples ``ok`` only, put back at their places
    among all samples, NaN at the others (``values``: name -> array over the ``ok`` samples,
    first dim)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v)
        full = np.full((ok.shape[0], *v.shape[1:]), np.nan if v.dtype != bool else False, dtype=v.dtype
                       if v.dtype == bool else np.float64)
        full[ok] = v
        out[name] = full
    return out


def refuse_stores(name: str, stores) -> None:
    """One-line ValueError if an analysis that reads no store (``STORES = "none"``) is given some."""
    if stores:
        given = ", ".join(map(str, stores.keys() if hasattr(stores, "keys") else stores))
        raise ValueError(f"analysis {name} takes no stores; got {len(stores)}: {given}")


def open_store(store) -> xr.Dataset:
    """A trace store given as a path, or already opened."""
    return store if isinstance(store, xr.Dataset) else open_run(store)


def checked_store(store, variables, hints=LATENT_HINTS) -> tuple[xr.Dataset, int, str]:
    """The store restricted to its completed steps, its full step count T and its
    ``incomplete_note``, after checking it has what ``variables`` names (one-line StoreError)."""
    ds = open_store(store)
    require(ds, variables=variables, hints=hints)
    return completed_steps(ds), int(ds.sizes["step"]), incomplete_note(ds)


def latent_block(ds: xr.Dataset, var: str, k: int, model: int | None, samples: slice = slice(None)) -> np.ndarray:
    """``(sample, n)`` float64 values of ``var`` at step k for one model (``None`` for a variable
    without a model dim, such as ``agg_z``; n: the latent's size), for the samples ``samples`` (all
    by default; a lazily opened store reads only their chunks)."""
    at = {"step": k, "sample": samples} if model is None else {"step": k, "model": model, "sample": samples}
    a = ds[var].isel(at).values.astype(np.float64)
    return a.reshape(a.shape[0], -1)


def store_sample_chunk(ds: xr.Dataset, var: str) -> int:
    """How many samples one chunk of ``var`` holds in the store (its zarr chunking; all samples for
    a dataset held in memory): the least a read of some samples decodes."""
    total = int(ds.sizes["sample"])
    chunks = ds[var].encoding.get("chunks")
    if not chunks:
        return max(total, 1)
    return max(min(int(chunks[ds[var].dims.index("sample")]), total), 1)


def sample_slices(ds: xr.Dataset, var: str, chunk: int | None = None) -> list[slice]:
    """The slices of samples a streaming analysis reads ``var`` in, covering every sample in order.

    ``chunk`` samples per slice; by default as many whole store chunks (``store_sample_chunk``) as
    fit a float64 block of ``CHUNK_BYTES``, at least one, so that peak memory depends on the store's
    chunking and not on its number of samples."""
    total = int(ds.sizes["sample"])
    if chunk is None:
        stored = store_sample_chunk(ds, var)
        n = int(np.prod([ds.sizes[d] for d in ds[var].dims[ds[var].dims.index("sample") + 1:]]))
        chunk = max(stored, CHUNK_BYTES // (8 * max(n, 1)) // stored * stored)
    elif isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a whole number of samples >= 1; got {chunk!r}")
    return [slice(j, min(j + int(chunk), total)) for j in range(0, total, int(chunk))]


def slot_written_streamed(ds: xr.Dataset, var: str, k: int, model: int | None, slices: list[slice]) -> bool:
    """``slot_written`` of one model's slot at step k (``model`` None: a variable without a model
    dim, such as ``agg_z``), read a slice of samples at a time (it stops at the first slice with a
    value that is not NaN)."""
    da = ds[var].isel(step=k) if model is None else ds[var].isel(step=k, model=model)
    return any(slot_written(da.isel(sample=s).values) for s in slices)


def streamed(slices: list[slice], per_slice) -> tuple[dict, np.ndarray]:
    """``per_slice(samples) -> (ok, values over the ok samples)`` over every slice of samples, put
    back in place (``scatter``) and joined along the samples: the per-sample arrays of all samples
    and their finite mask, while no more than one slice's latents are held at a time."""
    parts = []
    for samples in slices:
        ok, values = per_slice(samples)
        parts.append((ok, scatter(ok, values)))
    names = parts[0][1].keys()
    return {name: np.concatenate([p[1][name] for p in parts]) for name in names}, np.concatenate([p[0] for p in parts])


def both_sampled(ds: xr.Dataset, pair: tuple[int, int], chunk: int | None = None) -> list[int]:
    """The (completed) steps at which both models of ``pair`` wrote their sampled latent ``z_next``
    (read in slices of samples, ``sample_slices``)."""
    slices = sample_slices(ds, "z_next", chunk)
    return [k for k in range(ds.sizes["step"])
            if all(slot_written_streamed(ds, "z_next", k, m, slices) for m in pair)]


def rejection_band(alpha: float, count: int) -> float:
    """The largest share of ``count`` tests at level ``alpha`` that may reject while the null
    holds everywhere (alpha + 3 standard errors of the share)."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / count)


def paired_difference(a, b) -> tuple[float, float]:
    """The paired difference ``a - b`` of two runs' per-sample values ``(sample,)`` (the same
    seeds): its mean and its standard error (``scipy.stats.sem``, ddof 1; NaN for one sample)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(stats.sem(d, ddof=1)) if len(d) > 1 else math.nan


def finite_cells(res: xr.Dataset) -> xr.DataArray:
    """``(step, sample)`` bool of a per-store results dataset: its ``finite`` variable, or all true
    for results that carry none."""
    return res["finite"] if "finite" in res else xr.ones_like(res.delta, dtype=bool)


def partial_data(res: xr.Dataset) -> dict:
    """What a per-store results dataset ``(step, sample)`` left out, as ``qualify``'s keywords:
    samples non-finite at any of its steps, of all samples, and the store's incomplete note."""
    fin = finite_cells(res)
    return {"nonfinite": int((~fin).any("step").sum()), "total": int(res.sizes["sample"]),
            "incomplete": res.attrs.get("incomplete", "")}


def pooled_partial(ds, dim: str) -> dict:
    """What results pooled over several stores (one entry per ``dim``: a store or a run) left
    out, as ``qualify``'s keywords: the non-finite samples of all of them, of all samples, and each
    incomplete store's note with its name. Empty when ``ds`` carries no counts."""
    if "nonfinite" not in ds:
        return {}
    notes = [f"{note} ({name})" for name, note in zip(ds[dim].values, ds.incomplete.values) if note]
    return {"nonfinite": int(ds.nonfinite.sum()), "total": int(ds.samples.sum()), "incomplete": notes}


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or None (JSON null) where it is not finite (an end of an interval too few
    samples pin down, a mean of no cells)."""
    return float(x) if math.isfinite(float(x)) else None
