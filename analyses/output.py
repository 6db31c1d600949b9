"""Writing an analysis' results: a folder per result, written to a temporary name and renamed
into place when complete, so nothing is left half-written and looking complete.

Every result folder holds a marker file, ``.amdm-geom-result``. A folder is only ever replaced
if it holds one (or is empty): ``--out ~/thesis`` never deletes anything of the user's."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from amdm_geom.verdicts import Verdict, to_json

__all__ = ["MARKER", "check_replaceable", "finite_samples", "is_result_folder", "result_folder", "save_dataset",
           "save_figures", "save_verdicts", "scatter", "slot_written"]

#: The file that makes a folder a result folder of this toolkit (and so replaceable).
MARKER = ".amdm-geom-result"


def is_result_folder(path) -> bool:
    """Whether ``path`` is a folder this toolkit wrote (it holds ``MARKER``)."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def check_replaceable(path) -> None:
    """One-line ValueError unless ``path`` is absent, an empty folder, or a result folder."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and (is_result_folder(path) or not any(path.iterdir())):
        return
    kind = "a folder" if path.is_dir() and not path.is_symlink() else "a file"
    raise ValueError(f"refusing to replace {path}: it is {kind}, not an amdm-geom result folder (no {MARKER} "
                     f"in it); move it away or write elsewhere (--out)")


# --------------------------------------------------------------------------------------------
# reading a store's slots: written or not, finite or not


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


# --------------------------------------------------------------------------------------------
# result folders


@contextmanager
def result_folder(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    ``path`` must be absent, an empty folder, or a result folder written before (it holds
    ``MARKER``); anything else is refused with a one-line ValueError before any work, and left
    untouched. The new folder gets the marker."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / MARKER).write_text("written by amdm-geom; this folder is replaced when its analysis runs again\n")
        yield tmp
        check_replaceable(path)  # again: something may have appeared there meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_dataset(ds: xr.Dataset, path) -> None:
    """A results dataset as a zarr group (attrs made JSON-safe)."""
    ds = ds.copy()
    ds.attrs = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in ds.attrs.items()}
    for name, var in ds.variables.items():  # fixed-width unicode has no zarr v3 spec; strings do
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3)


def save_figures(figs, folder, names) -> list[Path]:
    """Each figure as ``<name>.png`` in ``folder``; figures are closed afterwards."""
    import matplotlib.pyplot as plt

    paths = []
    for fig, name in zip(figs, names):
        p = Path(folder) / f"{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def save_verdicts(rows: list[Verdict], folder) -> None:
    (Path(folder) / "verdicts.json").write_text(to_json(rows))
