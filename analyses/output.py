"""Writing an analysis' results: a folder per result, written to a temporary name and renamed
into place when complete, so nothing is left half-written and looking complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

from amdm_geom.verdicts import Verdict, to_json

__all__ = ["result_folder", "save_dataset", "save_figures", "save_verdicts"]


@contextmanager
def result_folder(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


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
