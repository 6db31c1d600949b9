"""Writing an analysis' results: a folder per result, written to a temporary name and renamed
into place when complete, so nothing is left half-written and looking complete.

Every result folder holds a marker file, ``.amdm-geom-result``. A folder is only ever replaced
if it holds one, is empty, or holds nothing but result folders (an older layout's per-store
results): ``--out ~/thesis`` never deletes anything of the user's."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import xarray as xr

from amdm_geom.verdicts import Verdict, to_json

__all__ = ["CAPTIONS_FILE", "MARKER", "caption_of", "check_replaceable", "is_result_folder", "result_folder",
           "save_dataset", "save_figures", "save_result", "save_tables", "save_verdicts", "write_result"]

#: The file that makes a folder a result folder of this toolkit (and so replaceable).
MARKER = ".amdm-geom-result"
#: ``{figure file: caption}`` of a result folder (the report reads it).
CAPTIONS_FILE = "figures.json"


def is_result_folder(path) -> bool:
    """Whether ``path`` is a folder this toolkit wrote (it holds ``MARKER``)."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def _only_results(path: Path) -> bool:
    entries = list(path.iterdir())
    return all(is_result_folder(p) for p in entries)


def check_replaceable(path) -> None:
    """One-line ValueError unless ``path`` is absent, an empty folder, a result folder, or a
    folder holding only result folders."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and (is_result_folder(path) or _only_results(path)):
        return
    kind = "a folder" if path.is_dir() and not path.is_symlink() else "a file"
    raise ValueError(f"refusing to replace {path}: it is {kind}, not an amdm-geom result folder (no {MARKER} "
                     f"in it); move it away or write elsewhere (--out)")


@contextmanager
def result_folder(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    ``path`` must be replaceable (``check_replaceable``); anything else is refused with a
    one-line ValueError before any work, and left untouched. The new folder gets the marker."""
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
    """A results dataset as a zarr group (attrs made JSON-safe), its numeric variables compressed
    with zstd (results are read rarely and kept in the report folder: small beats fast here)."""
    from zarr.codecs import ZstdCodec

    ds = ds.copy()
    ds.attrs = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in ds.attrs.items()}
    for name, var in ds.variables.items():  # fixed-width unicode has no zarr v3 spec; strings do
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    for var in ds.variables.values():  # (encodings read from another store do not carry over)
        var.encoding = {}
    encoding = {name: {"compressors": (ZstdCodec(level=3),)} for name, var in ds.variables.items()
                if var.dtype.kind in "biuf" and var.size > 1}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3, encoding=encoding)


def save_result(result: xr.Dataset | xr.DataTree, folder, stem: str = "results") -> list[Path]:
    """A Dataset as ``<stem>.zarr``; a DataTree's nodes that hold variables each as
    ``<node path>.zarr`` (the root's own as ``<stem>.zarr``)."""
    folder = Path(folder)
    if isinstance(result, xr.Dataset):
        save_dataset(result, folder / f"{stem}.zarr")
        return [folder / f"{stem}.zarr"]
    if not isinstance(result, xr.DataTree):
        raise TypeError(f"an analysis result must be an xarray Dataset or DataTree; got {type(result).__name__}")
    paths = []
    for node in result.subtree:
        if not node.data_vars:
            continue
        rel = node.relative_to(result)
        path = folder / (f"{stem}.zarr" if rel == "." else f"{rel}.zarr")
        save_dataset(node.to_dataset(), path)
        paths.append(path)
    return paths


def _file(folder: Path, name: str, suffix: str) -> Path:
    rel = Path(name if name.endswith(suffix) else f"{name}{suffix}")
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"an analysis' file name must be a path inside its result folder; got {name!r}")
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def caption_of(name: str, captions: Mapping[str, str]) -> str:
    """The caption of figure ``name`` (its file name without ``.png``): the first pattern of
    ``captions`` (``fnmatch`` patterns, e.g. ``"*/norm_gap"``) it matches, "" if none does."""
    from fnmatch import fnmatchcase

    stem = name.removesuffix(".png")
    return next((text for pattern, text in captions.items() if fnmatchcase(stem, pattern)), "")


def save_figures(figures: Mapping, folder, captions: Mapping[str, str] | None = None) -> list[Path]:
    """Each figure (``{file name: figure}``) as ``<name>.png`` in ``folder``, closed afterwards;
    ``captions`` (patterns, see ``caption_of``) give ``figures.json``'s captions."""
    import matplotlib.pyplot as plt

    paths, said = [], {}
    for name, fig in figures.items():
        path = _file(Path(folder), name, ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
        said[path.relative_to(folder).as_posix()] = caption_of(name, captions or {})
    if said:
        (Path(folder) / CAPTIONS_FILE).write_text(json.dumps(said, indent=1))
    return paths


def save_tables(tables: Mapping[str, pd.DataFrame], folder) -> list[Path]:
    """Each table (``{file name: DataFrame}``) as ``<name>.csv`` in ``folder`` (``%.6g``); the
    index is written unless it is an unnamed RangeIndex."""
    paths = []
    for name, table in tables.items():
        path = _file(Path(folder), name, ".csv")
        plain = isinstance(table.index, pd.RangeIndex) and table.index.name is None
        table.to_csv(path, index=not plain, float_format="%.6g")
        paths.append(path)
    return paths


def save_verdicts(rows: list[Verdict], folder) -> None:
    (Path(folder) / "verdicts.json").write_text(to_json(rows))


def write_result(target, result: xr.Dataset | xr.DataTree, rows: list[Verdict], figures: Mapping | None = None,
                 tables: Mapping | None = None, *, stem: str = "results", captions: Mapping | None = None) -> Path:
    """The whole result folder ``target``, atomically: the result's zarr groups, the figures
    (with ``figures.json``, their ``captions``), the tables and ``verdicts.json``."""
    with result_folder(target) as tmp:
        save_result(result, tmp, stem)
        save_figures(figures or {}, tmp, captions)
        save_tables(tables or {}, tmp)
        save_verdicts(rows, tmp)
    return Path(target)
