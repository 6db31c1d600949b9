"""Writing an analysis' results: a folder per result, written to a temporary name and renamed
into place when complete, so nothing is left half-written and looking complete.

Every result folder holds a marker file, ``.amdm-geom-result``: a manifest (JSON) of every file
the toolkit wrote into it, with each file's SHA-256. A folder is only ever replaced (or removed
by ``amdm-geom clean``) if every file in it is in its manifest, unchanged, or if it is empty or
holds nothing but such result folders: ``--out ~/thesis`` never deletes anything of the user's,
and a user's ``notes.md`` dropped into a result folder makes the replacement refuse, naming it.
The report folder's own files (``index.html``, ``verdicts.json``) are listed the same way in its
``.amdm-geom-report`` (``write_owned``, ``remove_owned``).

Result stores (``<stem>.zarr``) carry a CRC-32C on every chunk, like trace stores, and
``open_result`` checks a result store against its folder's manifest before reading it: a chunk
zeroed, truncated, deleted or an array's metadata changed is a one-line ``DamagedStoreError``
naming the store, the variable and the chunk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import xarray as xr

from amdm_geom import __version__
from amdm_geom.core.verdicts import Verdict, to_json

__all__ = ["CAPTIONS_FILE", "MARKER", "REPORT_MARKER", "caption_of", "check_replaceable", "foreign_in_result",
           "is_result_folder", "open_result", "owned", "remove_owned", "result_folder", "save_dataset", "save_figures",
           "save_result", "save_tables", "save_verdicts", "write_owned", "write_result"]

#: The file that makes a folder a result folder of this toolkit: the manifest of its files.
MARKER = ".amdm-geom-result"
#: The manifest of the files ``validate`` wrote at the top of a report folder.
REPORT_MARKER = ".amdm-geom-report"
_LIBRARY = "amdm-geom"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_under(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (relative, "/"-separated), links to folders included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / f).as_posix() for f in filenames]
        out += [(rel / d).as_posix() for d in dirnames if os.path.islink(Path(dirpath) / d)]
    return sorted(out)


def _write_manifest(folder: Path, marker: str, files: dict[str, str]) -> None:
    doc = {"creation_library": f"{_LIBRARY} {__version__}", "files": dict(sorted(files.items()))}
    tmp = folder / f".{marker}.partial"
    tmp.write_text(json.dumps(doc, indent=0))
    os.replace(tmp, folder / marker)


def _read_manifest(path: Path) -> dict[str, str] | None:
    """The ``files`` of a manifest marker, None if it is not one (an older plain-text marker)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not str(doc.get("creation_library", "")).startswith(_LIBRARY):
        return None
    files = doc.get("files")
    return files if isinstance(files, dict) else None


def foreign_in_result(folder) -> list[str]:
    """The files in the result folder ``folder`` that the toolkit cannot show it wrote: not in the
    manifest, or changed since (``[]`` for an intact result folder). A folder whose marker is an
    older one without a manifest proves nothing: its marker is returned."""
    folder = Path(folder)
    files = _read_manifest(folder / MARKER)
    if files is None:
        return [f"{MARKER} (written by an older amdm-geom, without a manifest of its files)"]
    out = []
    for rel in _files_under(folder):
        if rel == MARKER:
            continue
        path = folder / rel
        if rel not in files or path.is_symlink() or _digest(path) != files[rel]:
            out.append(rel)
    return out
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
    """One-line ValueError unless ``path`` is absent, an empty folder, an intact result folder
    (every file in its manifest, unchanged), or a folder holding only such result folders."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        inner = [path] if is_result_folder(path) else (list(path.iterdir()) if _only_results(path) else None)
        if inner is not None:
            for folder in inner:
                foreign = foreign_in_result(folder)
                if foreign:
                    raise ValueError(f"refusing to replace {path}: {folder / foreign[0]} was not written by amdm-geom "
                                     f"(or changed since); move it out first, or write elsewhere (--out)")
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
        _write_manifest(tmp, MARKER, {})
        yield tmp
        _write_manifest(tmp, MARKER, {rel: _digest(tmp / rel) for rel in _files_under(tmp) if rel != MARKER})
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
    from zarr.codecs import Crc32cCodec

    encoding = {name: {"compressors": (ZstdCodec(level=3), Crc32cCodec()) if var.dtype.kind in "biuf" and var.size > 1
                       else (Crc32cCodec(),)}
                for name, var in ds.variables.items() if var.dtype.kind in "biufb"}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3, encoding=encoding)


def open_result(path) -> xr.Dataset:
    """Open a result store (``<result folder>/<name>.zarr``) after checking every file of it
    against its result folder's manifest: one-line ``DamagedStoreError`` naming the store, the
    variable and the chunk if one is missing, truncated or changed, or if a file appeared in it;
    ``FileNotFoundError`` if there is none, ``ValueError`` if it is not inside a result folder."""
    from amdm_geom.store import DamagedStoreError  # (the trace layer imports torch; the CLI reads this module)

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"no result store at {path}")
    folder = next((p for p in path.parents if is_result_folder(p)), None)
    files = _read_manifest(folder / MARKER) if folder is not None else None
    if files is None:
        raise ValueError(f"{path} is not inside an amdm-geom result folder with a manifest ({MARKER}); "
                         "it cannot be checked")
    prefix = path.relative_to(folder).as_posix() + "/"
    listed = {rel[len(prefix):]: digest for rel, digest in files.items() if rel.startswith(prefix)}
    present = {rel[len(prefix):] for rel in _files_under(folder) if rel.startswith(prefix)}
    for inner in sorted(set(listed) | present):
        variable, _, chunk = inner.partition("/")
        what = f"variable {variable!r}, chunk {chunk}" if chunk and chunk != "zarr.json" else f"{inner}"
        if inner not in listed:
            raise DamagedStoreError(f"damaged store {path}: {inner} was not written by amdm-geom")
        if inner not in present:
            raise DamagedStoreError(f"damaged store {path}: {what}: missing")
        if _digest(path / inner) != listed[inner]:
            raise DamagedStoreError(f"damaged store {path}: {what}: changed after writing (truncated, zeroed or "
                                    "edited)")
    return xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None, zarr_format=3)


def write_owned(folder, name: str, text: str) -> Path:
    """Write the report folder's top-level file ``name`` atomically and list it, with its SHA-256,
    in the folder's ``REPORT_MARKER`` (what ``clean`` and the next ``validate`` may remove)."""
    folder = Path(folder)
    tmp = folder / f".{name}.partial"
    tmp.write_text(text, encoding="utf-8")
    files = _read_manifest(folder / REPORT_MARKER) or {}
    files[name] = _digest(tmp)
    _write_manifest(folder, REPORT_MARKER, files)
    os.replace(tmp, folder / name)
    return folder / name


def owned(folder, name: str) -> bool:
    """Whether the report folder's ``name`` is a file listed, unchanged, in its ``REPORT_MARKER``."""
    folder = Path(folder)
    path = folder / name
    files = _read_manifest(folder / REPORT_MARKER) or {}
    return path.is_file() and not path.is_symlink() and files.get(name) == _digest(path)


def remove_owned(folder, names) -> None:
    """Remove the report folder's files ``names`` that the toolkit wrote (``owned``); absent ones
    are fine. One-line ValueError, before removing anything, if one is there and is not ours."""
    folder = Path(folder)
    for name in names:
        if (folder / name).exists() or (folder / name).is_symlink():
            if not owned(folder, name):
                raise ValueError(f"refusing to replace {folder / name}: it was not written by amdm-geom (or changed "
                                 f"since); move it away or choose another report folder")
    files = _read_manifest(folder / REPORT_MARKER) or {}
    for name in names:
        (folder / name).unlink(missing_ok=True)
        files.pop(name, None)
    if (folder / REPORT_MARKER).exists():
        _write_manifest(folder, REPORT_MARKER, files)


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
